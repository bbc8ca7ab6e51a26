CREATE TYPE "public"."file_step_status" AS ENUM('pending', 'running', 'done', 'skipped', 'failed');--> statement-breakpoint
CREATE TYPE "public"."file_version_status" AS ENUM('processing', 'ready', 'failed');--> statement-breakpoint
CREATE TYPE "public"."upload_session_status" AS ENUM('uploading', 'completing', 'completed', 'aborted', 'expired', 'failed');--> statement-breakpoint
CREATE TABLE "file_processing_steps" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"version_id" uuid NOT NULL,
	"position" integer NOT NULL,
	"name" text NOT NULL,
	"status" "file_step_status" DEFAULT 'pending' NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"run_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"locked_until" timestamp (3) with time zone,
	"last_error" text,
	"result" jsonb,
	"started_at" timestamp (3) with time zone,
	"finished_at" timestamp (3) with time zone
);
--> statement-breakpoint
CREATE TABLE "upload_progress" (
	"owner_id" text NOT NULL,
	"upload_id" text NOT NULL,
	"run_id" text NOT NULL,
	"event" jsonb NOT NULL,
	"percent" double precision DEFAULT 0 NOT NULL,
	"terminal" boolean DEFAULT false NOT NULL,
	"updated_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "upload_progress_owner_id_upload_id_pk" PRIMARY KEY("owner_id","upload_id")
);
--> statement-breakpoint
CREATE TABLE "file_objects" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"owner_id" text NOT NULL,
	"sha256" text NOT NULL,
	"storage_key" text NOT NULL,
	"mime_type" text NOT NULL,
	"size" bigint NOT NULL,
	"stored_sha256" text NOT NULL,
	"original_size" bigint NOT NULL,
	"width" integer,
	"height" integer,
	"page_count" integer,
	"variants" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"ref_count" integer DEFAULT 1 NOT NULL,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "upload_session_parts" (
	"session_id" uuid NOT NULL,
	"part_number" integer NOT NULL,
	"etag" text NOT NULL,
	"size" bigint NOT NULL,
	"received_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "upload_session_parts_session_id_part_number_pk" PRIMARY KEY("session_id","part_number")
);
--> statement-breakpoint
CREATE TABLE "upload_sessions" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"owner_id" text NOT NULL,
	"filename" text NOT NULL,
	"declared_type" text NOT NULL,
	"size" bigint NOT NULL,
	"sha256" text,
	"target_file_id" uuid,
	"file_id" uuid NOT NULL,
	"version_id" uuid NOT NULL,
	"part_size" bigint NOT NULL,
	"part_count" integer NOT NULL,
	"storage_key" text NOT NULL,
	"multipart_upload_id" text NOT NULL,
	"status" "upload_session_status" DEFAULT 'uploading' NOT NULL,
	"error" text,
	"expires_at" timestamp (3) with time zone NOT NULL,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"completed_at" timestamp (3) with time zone
);
--> statement-breakpoint
DROP INDEX "file_versions_storage_key_uq";--> statement-breakpoint
ALTER TABLE "file_versions" ADD COLUMN "status" "file_version_status" DEFAULT 'ready' NOT NULL;--> statement-breakpoint
ALTER TABLE "file_versions" ADD COLUMN "declared_type" text;--> statement-breakpoint
ALTER TABLE "file_versions" ADD COLUMN "object_id" uuid;--> statement-breakpoint
ALTER TABLE "file_versions" ADD COLUMN "page_count" integer;--> statement-breakpoint
ALTER TABLE "file_versions" ADD COLUMN "upload_id" text;--> statement-breakpoint
ALTER TABLE "file_versions" ADD COLUMN "error" text;--> statement-breakpoint
ALTER TABLE "file_versions" ADD COLUMN "error_code" text;--> statement-breakpoint
ALTER TABLE "files" ADD COLUMN "latest_version" integer DEFAULT 1 NOT NULL;--> statement-breakpoint
ALTER TABLE "file_processing_steps" ADD CONSTRAINT "file_processing_steps_version_id_file_versions_id_fk" FOREIGN KEY ("version_id") REFERENCES "public"."file_versions"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "upload_session_parts" ADD CONSTRAINT "upload_session_parts_session_id_upload_sessions_id_fk" FOREIGN KEY ("session_id") REFERENCES "public"."upload_sessions"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "file_processing_steps_version_position_uq" ON "file_processing_steps" USING btree ("version_id","position");--> statement-breakpoint
CREATE INDEX "file_processing_steps_due_idx" ON "file_processing_steps" USING btree ("status","run_at");--> statement-breakpoint
CREATE INDEX "upload_progress_updated_idx" ON "upload_progress" USING btree ("updated_at");--> statement-breakpoint
CREATE UNIQUE INDEX "file_objects_owner_sha_uq" ON "file_objects" USING btree ("owner_id","sha256");--> statement-breakpoint
CREATE UNIQUE INDEX "file_objects_storage_key_uq" ON "file_objects" USING btree ("storage_key");--> statement-breakpoint
CREATE INDEX "upload_sessions_status_expires_idx" ON "upload_sessions" USING btree ("status","expires_at");--> statement-breakpoint
CREATE INDEX "upload_sessions_owner_status_idx" ON "upload_sessions" USING btree ("owner_id","status");--> statement-breakpoint
ALTER TABLE "file_versions" ADD CONSTRAINT "file_versions_object_id_file_objects_id_fk" FOREIGN KEY ("object_id") REFERENCES "public"."file_objects"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "file_versions_storage_key_idx" ON "file_versions" USING btree ("storage_key");--> statement-breakpoint
CREATE INDEX "file_versions_object_idx" ON "file_versions" USING btree ("object_id");