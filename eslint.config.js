// @ts-check
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['node_modules', 'data', 'drizzle', 'coverage'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-restricted-syntax': ['error', {
        selector: "MemberExpression[object.name='process'][property.name='env']",
        message: 'Read configuration in src/config.ts only.'
      }]
    }
  },
  {
    files: ['src/config.ts', 'test/**', 'bench/**', 'scripts/**', 'drizzle.config.ts', 'vitest.config.ts'],
    rules: { 'no-restricted-syntax': 'off' }
  }
)
