import { builder } from './builder'
import './scalars'
import './errors'
import './viewer'
import './files'
import './cache'
import './email'

export const schema = builder.toSchema({ sortSchema: true })
