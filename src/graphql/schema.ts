import { builder } from './builder'
import './scalars'
import './errors'
import './viewer'
import './files'
import './uploads'
import './cache'
import './email'
import './infrastructure'
import './campaigns'
import './tracking'
import './webhook-endpoints'

const built = builder.toSchema({ sortSchema: true })

/**
 * The errors plugin wraps each mutation's value in a generated `<Field>Success` type whose data
 * field has no description of its own; give it the mutation's, so every field is documented.
 */
for (const field of Object.values(built.getMutationType()?.getFields() ?? {})) {
  const union = field.type.toString().replace(/!$/, '')
  const success = built.getType(union.replace(/Result$/, 'Success'))
  if (!success || !('getFields' in success) || !union.endsWith('Result')) continue
  for (const dataField of Object.values(success.getFields())) {
    dataField.description ??= `What ${field.name} returns: ${field.description ?? ''}`.trim()
  }
}

export const schema = built
