CREATE TYPE "public"."webhook_event_status" AS ENUM('pending', 'done', 'ignored', 'dead');--> statement-breakpoint
CREATE TABLE "campaign_conversion_values" (
	"campaign_id" uuid NOT NULL,
	"currency" text NOT NULL,
	"conversions" integer DEFAULT 0 NOT NULL,
	"value" numeric(18, 2) DEFAULT '0' NOT NULL,
	CONSTRAINT "campaign_conversion_values_pk" PRIMARY KEY("campaign_id","currency")
);
--> statement-breakpoint
CREATE TABLE "campaign_event_rollups" (
	"campaign_id" uuid NOT NULL,
	"bucket" timestamp (3) with time zone NOT NULL,
	"type" smallint NOT NULL,
	"count" integer DEFAULT 0 NOT NULL,
	"machine" integer DEFAULT 0 NOT NULL,
	"uniques" integer DEFAULT 0 NOT NULL,
	"human_uniques" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "campaign_event_rollups_pk" PRIMARY KEY("campaign_id","bucket","type")
);
--> statement-breakpoint
CREATE TABLE "campaign_link_clicks" (
	"campaign_id" uuid NOT NULL,
	"link_index" smallint NOT NULL,
	"url" text NOT NULL,
	"clicks" integer DEFAULT 0 NOT NULL,
	"human_clicks" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "campaign_link_clicks_pk" PRIMARY KEY("campaign_id","link_index")
);
--> statement-breakpoint
CREATE TABLE "email_daily_rollups" (
	"day" date NOT NULL,
	"type" smallint NOT NULL,
	"count" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "email_daily_rollups_pk" PRIMARY KEY("day","type")
);
--> statement-breakpoint
CREATE TABLE "email_events" (
	"campaign_id" uuid NOT NULL,
	"recipient_id" bigint NOT NULL,
	"occurred_at" timestamp (3) with time zone NOT NULL,
	"dedupe_key" bigint,
	"type" smallint NOT NULL,
	"link_index" smallint,
	"machine" boolean DEFAULT false NOT NULL,
	"value" numeric(14, 2),
	"currency" text,
	CONSTRAINT "email_events_type_ck" CHECK ("email_events"."type" between 1 and 12)
);
--> statement-breakpoint
CREATE TABLE "recipient_engagement" (
	"recipient_id" bigint PRIMARY KEY NOT NULL,
	"campaign_id" uuid NOT NULL,
	"flags" smallint DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE TABLE "webhook_events" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "webhook_events_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"svix_id" text NOT NULL,
	"type" smallint NOT NULL,
	"provider_id" text,
	"campaign_id" uuid,
	"recipient_id" bigint,
	"email" text,
	"occurred_at" timestamp (3) with time zone NOT NULL,
	"detail" text,
	"machine" boolean DEFAULT false NOT NULL,
	"status" "webhook_event_status" DEFAULT 'pending' NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"next_attempt_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"locked_until" timestamp (3) with time zone,
	"last_error" text,
	"received_at" timestamp (3) with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "campaign_conversion_values" ADD CONSTRAINT "campaign_conversion_values_campaign_id_campaigns_id_fk" FOREIGN KEY ("campaign_id") REFERENCES "public"."campaigns"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "campaign_event_rollups" ADD CONSTRAINT "campaign_event_rollups_campaign_id_campaigns_id_fk" FOREIGN KEY ("campaign_id") REFERENCES "public"."campaigns"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "campaign_link_clicks" ADD CONSTRAINT "campaign_link_clicks_campaign_id_campaigns_id_fk" FOREIGN KEY ("campaign_id") REFERENCES "public"."campaigns"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "recipient_engagement" ADD CONSTRAINT "recipient_engagement_recipient_id_campaign_recipients_id_fk" FOREIGN KEY ("recipient_id") REFERENCES "public"."campaign_recipients"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "email_events_occurred_brin" ON "email_events" USING brin ("occurred_at");--> statement-breakpoint
CREATE UNIQUE INDEX "email_events_dedupe_uq" ON "email_events" USING btree ("dedupe_key") WHERE "email_events"."dedupe_key" is not null;--> statement-breakpoint
CREATE UNIQUE INDEX "webhook_events_svix_id_uq" ON "webhook_events" USING btree ("svix_id");--> statement-breakpoint
CREATE INDEX "webhook_events_due_idx" ON "webhook_events" USING btree ("next_attempt_at") WHERE "webhook_events"."status" = 'pending';--> statement-breakpoint
CREATE INDEX "webhook_events_received_brin" ON "webhook_events" USING brin ("received_at");