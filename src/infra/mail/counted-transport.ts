import { mailResponseClass, type MailResponseClass, type MailTransport } from './types'

/** Told how each provider call ended and how many messages it carried. */
export type SendObserver = (response: MailResponseClass, messages: number) => void

/**
 * The same transport, reporting each call's outcome per message. The senders (transactional
 * delivery, campaign batches) stay unaware of metrics, and one wrapper per kind of mail labels
 * them apart although they share the provider client.
 */
export function countedTransport(transport: MailTransport, observe: SendObserver): MailTransport {
  const rateLimit = transport.rateLimit
  return {
    kind: transport.kind,
    rateLimit: rateLimit ? () => rateLimit.call(transport) : undefined,
    async send(message, options) {
      try {
        const result = await transport.send(message, options)
        observe('2xx', 1)
        return result
      } catch (err) {
        observe(mailResponseClass(err), 1)
        throw err
      }
    },
    async sendBatch(messages, options) {
      let results
      try {
        results = await transport.sendBatch(messages, options)
      } catch (err) {
        if (messages.length > 0) observe(mailResponseClass(err), messages.length)
        throw err
      }
      const refused = results.filter((r) => r.error !== undefined).length
      if (results.length > refused) observe('2xx', results.length - refused)
      // A permissive batch answers 200 and refuses bad items one by one, as a 422 would refuse them alone.
      if (refused > 0) observe('4xx', refused)
      return results
    },
    check: () => transport.check(),
    close: () => transport.close(),
  }
}
