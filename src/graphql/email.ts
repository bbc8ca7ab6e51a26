import { wrapErrorIfMatches } from '@pothos/plugin-errors'
import { ConflictError, InvalidTokenError, NotFoundError, ValidationError } from '../lib/errors'
import type { EmailRecord } from '../services/email/email-service'
import { builder } from './builder'

const EmailStatusEnum = builder.enumType('EmailStatus', {
  description: 'Delivery state of a transactional email.',
  values: {
    QUEUED: { description: 'Waiting for sendAt, or for a retry after a provider hiccup (429/5xx).' },
    SENDING: { description: 'Claimed by a worker.' },
    SENT: { description: 'Accepted by the provider.' },
    FAILED: { description: 'Rejected by the provider or out of attempts; see lastError.' },
    CANCELLED: { description: 'Cancelled before sending.' },
  } as const,
})

const EmailRef = builder.objectRef<EmailRecord>('Email').implement({
  description: 'A transactional email and its delivery state.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Email id; also the basis of the provider idempotency key.' }),
    to: t.exposeString('to', { description: 'Recipient address.' }),
    template: t.exposeString('template', { description: 'Template name.' }),
    status: t.field({ type: EmailStatusEnum, description: 'Delivery state.', resolve: (e) => e.status }),
    sendAt: t.expose('sendAt', { type: 'DateTime', description: 'When it is (or was) due.' }),
    attempts: t.exposeInt('attempts', { description: 'Delivery attempts so far.' }),
    providerId: t.exposeString('providerId', { nullable: true, description: 'The provider message id once sent.' }),
    lastError: t.exposeString('lastError', { nullable: true, description: 'Why the last attempt failed.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was queued.' }),
    sentAt: t.expose('sentAt', { type: 'DateTime', nullable: true, description: 'When the provider accepted it.' }),
  }),
})

const TokenOwnerRef = builder.objectRef<{ userId: string; email: string }>('TokenOwner').implement({
  description: 'The user a single-use token was issued to.',
  fields: (t) => ({
    userId: t.exposeID('userId', { description: 'Your app\'s user id.' }),
    email: t.exposeString('email', { description: 'The address the token was sent to.' }),
  }),
})

const EmailUserInput = builder.inputType('EmailUserInput', {
  description: 'A user of your app, as the email needs them.',
  fields: (t) => ({
    id: t.id({ required: true, description: 'Your app\'s user id.' }),
    email: t.string({ required: true, description: 'Recipient address.' }),
    name: t.string({ required: true, description: 'Display name used in the greeting.' }),
  }),
})

const EventInput = builder.inputType('EventInput', {
  description: 'The event a reminder is about.',
  fields: (t) => ({
    id: t.id({ required: true, description: 'Your app\'s event id.' }),
    title: t.string({ required: true, description: 'Event title.' }),
    date: t.field({ type: 'DateTime', required: true, description: 'When the event starts.' }),
    location: t.string({ required: true, description: 'Where it happens.' }),
    url: t.string({ required: false, description: 'Link to the event page.' }),
  }),
})

const WelcomeEmailInput = builder.inputType('WelcomeEmailInput', {
  description: 'Sends a welcome email with an email verification link (valid 24 h).',
  fields: (t) => ({ user: t.field({ type: EmailUserInput, required: true, description: 'The new user.' }) }),
})

const PasswordResetInput = builder.inputType('PasswordResetInput', {
  description: 'Sends a password reset link (valid 1 h; earlier unused links stop working).',
  fields: (t) => ({ user: t.field({ type: EmailUserInput, required: true, description: 'The user who asked.' }) }),
})

const EventReminderInput = builder.inputType('EventReminderInput', {
  description: 'Schedules an event reminder. Scheduling the same user, event and sendAt twice queues one email.',
  fields: (t) => ({
    user: t.field({ type: EmailUserInput, required: true, description: 'Who to remind.' }),
    event: t.field({ type: EventInput, required: true, description: 'The event.' }),
    sendAt: t.field({ type: 'DateTime', required: true, description: 'When to send: in the future, at most a year ahead.' }),
  }),
})

/** Two mutations share SendEmailResult (API.md), which the errors plugin's per-field unions cannot express. */
const SendEmailSuccess = builder.objectRef<{ email: EmailRecord }>('SendEmailSuccess').implement({
  description: 'The email was accepted: sent, or queued for retry.',
  isTypeOf: (v) => typeof v === 'object' && v !== null && 'email' in v,
  fields: (t) => ({ email: t.field({ type: EmailRef, description: 'The email and its delivery state.', resolve: (r) => r.email }) }),
})

const SendEmailResult = builder.unionType('SendEmailResult', {
  description: 'SendEmailSuccess, or why the email was not accepted.',
  types: [SendEmailSuccess, ValidationError],
  // The wrapped error hides its prototype until unwrapped, so test for the success shape instead.
  resolveType: (value) => (typeof value === 'object' && value !== null && 'email' in value ? 'SendEmailSuccess' : 'ValidationError'),
})

const sendEmailResult = async (send: () => Promise<EmailRecord>) => {
  try {
    return { email: await send() }
  } catch (err) {
    // graphql-js treats a returned Error as thrown; wrap it the way the errors plugin does for its own unions.
    if (err instanceof ValidationError) return wrapErrorIfMatches(err, [ValidationError]) as ValidationError
    throw err
  }
}

builder.queryField('email', (t) =>
  t.field({
    type: EmailRef,
    nullable: true,
    description: 'A transactional email, to check its delivery (service).',
    authScopes: { service: true },
    args: { id: t.arg.id({ required: true, description: 'Email id.' }) },
    resolve: (_root, args, ctx) => ctx.services.email.getEmail(String(args.id)),
  }),
)

builder.mutationFields((t) => ({
  sendWelcomeEmail: t.field({
    type: SendEmailResult,
    description: 'Welcome email with a single-use verification link (service).',
    authScopes: { service: true },
    args: { input: t.arg({ type: WelcomeEmailInput, required: true, description: 'The user.' }) },
    resolve: (_root, args, ctx) => sendEmailResult(() => ctx.services.email.sendWelcomeEmail(userOf(args.input.user))),
  }),
  requestPasswordReset: t.field({
    type: SendEmailResult,
    description: 'Password reset email with a single-use link (service).',
    authScopes: { service: true },
    args: { input: t.arg({ type: PasswordResetInput, required: true, description: 'The user.' }) },
    resolve: (_root, args, ctx) => sendEmailResult(() => ctx.services.email.requestPasswordReset(userOf(args.input.user))),
  }),
  scheduleEventReminder: t.field({
    type: EmailRef,
    description: 'Queues an event reminder for sendAt. Durable: it is sent after a restart too (service).',
    authScopes: { service: true },
    errors: { types: [ValidationError], dataField: { name: 'email' } },
    args: { input: t.arg({ type: EventReminderInput, required: true, description: 'User, event and time.' }) },
    resolve: (_root, { input }, ctx) =>
      ctx.services.email.scheduleEventReminder({
        user: userOf(input.user),
        event: { id: String(input.event.id), title: input.event.title, date: input.event.date, location: input.event.location, url: input.event.url ?? undefined },
        sendAt: input.sendAt,
      }),
  }),
  cancelScheduledEmail: t.field({
    type: EmailRef,
    description: 'Cancels a queued email (service).',
    authScopes: { service: true },
    errors: { types: [NotFoundError, ConflictError], dataField: { name: 'email' } },
    args: { id: t.arg.id({ required: true, description: 'Email id.' }) },
    resolve: (_root, args, ctx) => ctx.services.email.cancelScheduledEmail(String(args.id)),
  }),
  verifyEmail: t.field({
    type: TokenOwnerRef,
    description: 'Consumes a verification token (single use). Mark the user verified in your app on success (service).',
    authScopes: { service: true },
    errors: { types: [InvalidTokenError], dataField: { name: 'owner' } },
    args: { token: t.arg.string({ required: true, description: 'The token from the link.' }) },
    resolve: (_root, args, ctx) => ctx.services.email.verifyEmail(args.token),
  }),
  consumePasswordResetToken: t.field({
    type: TokenOwnerRef,
    description: 'Consumes a password reset token (single use). Let the user set a new password in your app on success (service).',
    authScopes: { service: true },
    errors: { types: [InvalidTokenError], dataField: { name: 'owner' } },
    args: { token: t.arg.string({ required: true, description: 'The token from the link.' }) },
    resolve: (_root, args, ctx) => ctx.services.email.consumePasswordResetToken(args.token),
  }),
}))

function userOf(user: { id: string | number; email: string; name: string }) {
  return { id: String(user.id), email: user.email, name: user.name }
}
