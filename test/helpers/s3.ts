/**
 * An in-process S3 (fauxqs) with one fresh bucket, for tests of anything that stores bytes.
 * fauxqs keeps objects in memory, so each call gets its own server and nothing leaks between files.
 */
import { randomBytes } from 'node:crypto'
import { startFauxqs } from 'fauxqs'
import type { Env, S3Config } from '../../src/config'

export interface TestS3 {
  config: S3Config
  close(): Promise<void>
}

export async function startS3(): Promise<TestS3> {
  const server = await startFauxqs({ port: 0, logger: false })
  const { bucketName } = server.createBucket(`gw-test-${randomBytes(4).toString('hex')}`)
  return {
    config: {
      bucket: bucketName,
      endpoint: `http://127.0.0.1:${server.port}`,
      region: 'us-east-1',
      accessKeyId: 'test',
      secretAccessKey: 'test',
      forcePathStyle: true,
    },
    close: () => server.stop(),
  }
}

/** The S3_* variables that point an app at this bucket; `endpoint` replaces the server's (a proxy in front of it). */
export function s3Env(config: S3Config, endpoint = config.endpoint): Env {
  return {
    S3_BUCKET: config.bucket,
    S3_ENDPOINT: endpoint,
    S3_REGION: config.region,
    S3_ACCESS_KEY_ID: config.accessKeyId,
    S3_SECRET_ACCESS_KEY: config.secretAccessKey,
    S3_FORCE_PATH_STYLE: String(config.forcePathStyle),
  }
}
