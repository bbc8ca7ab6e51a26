CREATE TABLE "file_owner_usage" (
	"owner_id" text PRIMARY KEY NOT NULL,
	"versions" bigint DEFAULT 0 NOT NULL,
	"bytes" bigint DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE TABLE "file_pipeline_hourly" (
	"hour" timestamp (3) with time zone NOT NULL,
	"outcome" text NOT NULL,
	"code" text NOT NULL,
	"step" text NOT NULL,
	"runs" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "file_pipeline_hourly_pk" PRIMARY KEY("hour","outcome","code","step")
);
--> statement-breakpoint
CREATE TABLE "file_stat_deltas" (
	"mime_type" text,
	"status" text,
	"owner_id" text,
	"files" integer DEFAULT 0 NOT NULL,
	"versions" integer DEFAULT 0 NOT NULL,
	"bytes" bigint DEFAULT 0 NOT NULL,
	"outcome" text,
	"code" text,
	"step" text,
	"at" timestamp (3) with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "file_stat_totals" (
	"mime_type" text NOT NULL,
	"status" text NOT NULL,
	"versions" bigint DEFAULT 0 NOT NULL,
	"bytes" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "file_stat_totals_pk" PRIMARY KEY("mime_type","status")
);
--> statement-breakpoint
CREATE TABLE "file_status_totals" (
	"status" text PRIMARY KEY NOT NULL,
	"files" bigint DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE INDEX "file_owner_usage_bytes_idx" ON "file_owner_usage" USING btree ("bytes" DESC NULLS LAST,"owner_id");--> statement-breakpoint
-- The triggers below keep file_stat_deltas up to date in the transaction of every change; they only
-- append rows, so concurrent uploads never wait on a shared counter. See src/infra/db/schema/file-stats.ts.
CREATE FUNCTION file_stats_version_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  fid uuid;
  owner text;
  failed_step text;
  finished boolean := false;
BEGIN
  IF TG_OP = 'DELETE' THEN fid := OLD.file_id; ELSE fid := NEW.file_id; END IF;
  -- Null when the whole file is being deleted: file_stats_file_deleting already counted its owner's bytes.
  SELECT f.owner_id INTO owner FROM files f WHERE f.id = fid;
  IF TG_OP <> 'INSERT' THEN
    INSERT INTO file_stat_deltas (mime_type, status, owner_id, versions, bytes) VALUES (OLD.mime_type, OLD.status::text, owner, -1, -OLD.size);
  END IF;
  IF TG_OP = 'UPDATE' THEN finished := OLD.status = 'processing' AND NEW.status <> 'processing'; END IF;
  IF TG_OP <> 'DELETE' THEN
    IF finished AND NEW.status = 'failed' THEN
      SELECT s.name INTO failed_step FROM file_processing_steps s WHERE s.version_id = NEW.id AND s.status = 'failed' ORDER BY s.position LIMIT 1;
    END IF;
    INSERT INTO file_stat_deltas (mime_type, status, owner_id, versions, bytes, outcome, code, step)
    VALUES (
      NEW.mime_type, NEW.status::text, owner, 1, NEW.size,
      CASE WHEN finished THEN NEW.status::text END,
      CASE WHEN finished AND NEW.status = 'failed' THEN coalesce(NEW.error_code, 'UNKNOWN') END,
      CASE WHEN finished AND NEW.status = 'failed' THEN coalesce(failed_step, '') END
    );
  END IF;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE FUNCTION file_stats_file_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN INSERT INTO file_stat_deltas (status, files) VALUES (OLD.status::text, -1); END IF;
  IF TG_OP <> 'DELETE' THEN INSERT INTO file_stat_deltas (status, files) VALUES (NEW.status::text, 1); END IF;
  RETURN NULL;
END
$$;
--> statement-breakpoint
-- Before the row goes, while its versions are still there: the cascade that deletes them runs once
-- the file row is gone, so the version trigger can no longer find their owner.
CREATE FUNCTION file_stats_file_deleting() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO file_stat_deltas (owner_id, versions, bytes)
  SELECT OLD.owner_id, -count(*), -coalesce(sum(v.size), 0) FROM file_versions v WHERE v.file_id = OLD.id AND v.status <> 'failed'
  HAVING count(*) > 0;
  RETURN OLD;
END
$$;
--> statement-breakpoint
CREATE TRIGGER file_versions_stats_insert_delete AFTER INSERT OR DELETE ON file_versions FOR EACH ROW EXECUTE FUNCTION file_stats_version_changed();--> statement-breakpoint
CREATE TRIGGER file_versions_stats_update AFTER UPDATE ON file_versions FOR EACH ROW
  WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.size IS DISTINCT FROM NEW.size OR OLD.mime_type IS DISTINCT FROM NEW.mime_type)
  EXECUTE FUNCTION file_stats_version_changed();--> statement-breakpoint
CREATE TRIGGER files_stats_insert_delete AFTER INSERT OR DELETE ON files FOR EACH ROW EXECUTE FUNCTION file_stats_file_changed();--> statement-breakpoint
CREATE TRIGGER files_stats_update AFTER UPDATE ON files FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION file_stats_file_changed();--> statement-breakpoint
CREATE TRIGGER files_stats_deleting BEFORE DELETE ON files FOR EACH ROW EXECUTE FUNCTION file_stats_file_deleting();--> statement-breakpoint
-- Existing rows, once (the triggers above already hold the tables' locks, so nothing slips between).
INSERT INTO file_stat_totals (mime_type, status, versions, bytes) SELECT mime_type, status::text, count(*), sum(size) FROM file_versions GROUP BY 1, 2;--> statement-breakpoint
INSERT INTO file_status_totals (status, files) SELECT status::text, count(*) FROM files GROUP BY 1;--> statement-breakpoint
INSERT INTO file_owner_usage (owner_id, versions, bytes)
  SELECT f.owner_id, count(*), sum(v.size) FROM file_versions v JOIN files f ON f.id = v.file_id WHERE v.status <> 'failed' GROUP BY 1;--> statement-breakpoint
INSERT INTO file_pipeline_hourly (hour, outcome, code, step, runs)
  SELECT date_trunc('hour', r.finished_at, 'UTC'), r.outcome, r.code, r.step, count(*) FROM (
    SELECT v.status::text AS outcome,
      CASE WHEN v.status = 'failed' THEN coalesce(v.error_code, 'UNKNOWN') ELSE '' END AS code,
      CASE WHEN v.status = 'failed' THEN coalesce((SELECT s.name FROM file_processing_steps s WHERE s.version_id = v.id AND s.status = 'failed' ORDER BY s.position LIMIT 1), '') ELSE '' END AS step,
      (SELECT max(s.finished_at) FROM file_processing_steps s WHERE s.version_id = v.id) AS finished_at
    FROM file_versions v WHERE v.status <> 'processing'
  ) r
  WHERE r.finished_at > now() - interval '30 days'
  GROUP BY 1, 2, 3, 4;
