import { describe, expect, it } from 'vitest'
import { validateEmail } from '../src/lib/email-address'
import { ValidationError } from '../src/lib/errors'
import {
  assertNoHeaderInjection,
  escapeHeaderValue,
  escapeHtml,
  escapeHtmlAttribute,
  normalizeText,
  safeUrl,
  sanitizeInput,
} from '../src/lib/escape'
import { MAX_PASSWORD_LENGTH, MIN_PASSWORD_SCORE, validatePassword } from '../src/lib/password'

const SEED_EMAIL_REGEX = /^[^\s@]+@[^\s@]+\.[^\s@]+$/

describe('validateEmail', () => {
  it.each([
    ['consecutive dots in the local part', 'john..doe@example.com'],
    ['a leading dot', '.john@example.com'],
    ['a trailing dot before the @', 'john.@example.com'],
    ['consecutive dots in the domain', 'john@example..com'],
    ['a local part over 64 characters', `${'a'.repeat(65)}@example.com`],
    ['an address over 254 characters', `${'a'.repeat(60)}@${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}.com`],
    ['a control character', 'john\u0007doe@example.com'],
    ['a label starting with a hyphen', 'john@-example.com'],
  ])('rejects %s, which the seed regex accepted', (_, email) => {
    expect(SEED_EMAIL_REGEX.test(email)).toBe(true)
    expect(validateEmail(email)).toBe(false)
  })

  it.each([
    ['a space', 'john doe@example.com'],
    ['a CRLF header injection', 'john@example.com\r\nBcc: victim@example.com'],
    ['a missing TLD', 'john@localhost'],
    ['a missing domain', 'john@'],
    ['a missing local part', '@example.com'],
  ])('rejects %s', (_, email) => {
    expect(validateEmail(email)).toBe(false)
  })

  it.each(['john@example.com', 'john.doe+newsletter@mail.example.co.uk', 'J_O-H.N@sub-domain.example.org'])(
    'accepts %s',
    (email) => {
      expect(validateEmail(email)).toBe(true)
    },
  )

  it('accepts a local part of exactly 64 characters', () => {
    expect(validateEmail(`${'a'.repeat(64)}@example.com`)).toBe(true)
  })
})

describe('validatePassword', () => {
  const passphrase = 'correct-Horse-battery-staple-Quokka-91'

  it('keeps the seed result shape and adds the strength fields', () => {
    const r = validatePassword(passphrase)
    expect(r).toMatchObject({
      isValid: true,
      hasUpperCase: true,
      hasLowerCase: true,
      hasNumbers: true,
      hasSpecialChar: true,
      length: passphrase.length,
      tooShort: false,
      tooLong: false,
      isCommon: false,
    })
    expect(r.score).toBeGreaterThanOrEqual(MIN_PASSWORD_SCORE)
    expect(r.feedback).toEqual([])
  })

  it.each(['password1', 'Password123', 'PASSWORD1'])('flags %s as common and invalid', (password) => {
    const r = validatePassword(password)
    expect(r.isCommon).toBe(true)
    expect(r.isValid).toBe(false)
    expect(r.score).toBeLessThan(MIN_PASSWORD_SCORE)
    expect(r.feedback).toContain('This is a commonly used password.')
  })

  it('accepts a long random passphrase of lower-case words', () => {
    const r = validatePassword('vivid otter quantum lamp marble')
    expect(r.isValid).toBe(true)
    expect(r.hasUpperCase).toBe(false)
  })

  it('rejects a password shorter than 8 characters even when it is random', () => {
    const r = validatePassword('X9$kq!L')
    expect(r.tooShort).toBe(true)
    expect(r.isValid).toBe(false)
    expect(r.feedback[0]).toMatch(/at least 8/)
  })

  it('rejects a password longer than 128 characters', () => {
    const r = validatePassword('aB3$'.repeat(33))
    expect(r.length).toBe(132)
    expect(r.tooLong).toBe(true)
    expect(r.isValid).toBe(false)
  })

  it('counts code points, so 128 emoji are within the limit', () => {
    const emoji = '🦊'.repeat(MAX_PASSWORD_LENGTH)
    expect(emoji.length).toBe(2 * MAX_PASSWORD_LENGTH)
    const r = validatePassword(emoji)
    expect(r.length).toBe(MAX_PASSWORD_LENGTH)
    expect(r.tooLong).toBe(false)
  })

  it('rejects a long but guessable password on its score', () => {
    const r = validatePassword('aaaaaaaaaaaaaaaa')
    expect(r.isCommon).toBe(false)
    expect(r.score).toBeLessThan(MIN_PASSWORD_SCORE)
    expect(r.isValid).toBe(false)
    expect(r.feedback.length).toBeGreaterThan(0)
  })

  it.each(['_', '-', '.', ' ', '~', '€', '"', '\\'])('counts %j as a special character', (ch) => {
    expect(validatePassword(`abc${ch}def`).hasSpecialChar).toBe(true)
  })

  it('does not count letters of other scripts as special characters', () => {
    const r = validatePassword('ÉcoleÜber')
    expect(r.hasSpecialChar).toBe(false)
    expect(r.hasUpperCase).toBe(true)
  })

  it('lowers the score of a password built from the user’s own details', () => {
    const password = 'Marguerite.Featherstonehaugh'
    const alone = validatePassword(password)
    const withInputs = validatePassword(password, ['marguerite', 'featherstonehaugh'])
    expect(withInputs.score).toBeLessThan(alone.score)
  })

  it('judges only a bounded prefix, so a 1 MB password is rejected as too long without hanging', () => {
    const r = validatePassword('x'.repeat(1_000_000))
    expect(r.tooLong).toBe(true)
    expect(r.isValid).toBe(false)
  })
})

describe('escapeHtml', () => {
  it('escapes the five HTML-significant characters', () => {
    expect(escapeHtml(`&<>"'`)).toBe('&amp;&lt;&gt;&quot;&#x27;')
  })

  it('renders a script tag inert in text content', () => {
    expect(escapeHtml('<script>alert(1)</script>')).toBe('&lt;script&gt;alert(1)&lt;/script&gt;')
  })

  it('keeps a quoted attribute closed against an onmouseover payload', () => {
    const html = `<a title="${escapeHtml('" onmouseover="alert(1)')}">`
    expect(html).toBe('<a title="&quot; onmouseover=&quot;alert(1)">')
  })

  it('leaves ordinary text alone', () => {
    expect(escapeHtml('Zoë owes 5 €')).toBe('Zoë owes 5 €')
  })
})

describe('escapeHtmlAttribute', () => {
  it('keeps an attribute payload inside the value, quoted or not', () => {
    const encoded = escapeHtmlAttribute('" onmouseover="alert(1)')
    expect(encoded).toBe('&#x22;&#x20;onmouseover&#x3d;&#x22;alert&#x28;1&#x29;')
    expect(encoded).not.toMatch(/[\s"'=<>`]/)
  })

  it('encodes the characters that end an unquoted attribute', () => {
    expect(escapeHtmlAttribute("x onerror=alert`1`'")).toBe('x&#x20;onerror&#x3d;alert&#x60;1&#x60;&#x27;')
  })

  it('leaves alphanumerics and characters above U+00FF as they are', () => {
    expect(escapeHtmlAttribute('abcXYZ019日本🦊')).toBe('abcXYZ019日本🦊')
  })

  it('replaces control characters with U+FFFD rather than numeric references', () => {
    expect(escapeHtmlAttribute('a\u0000b\u0085c')).toBe('a&#xfffd;b&#xfffd;c')
  })
})

describe('safeUrl', () => {
  it.each([
    ['javascript:alert(1)'],
    [' JaVaScRiPt:alert(1)'],
    ['java\tscript:alert(1)'],
    ['java\nscript:alert(1)'],
    ['\u0001javascript:alert(1)'],
    ['javascript\u200b:alert(1)'],
    ['data:text/html,<script>alert(1)</script>'],
    ['vbscript:msgbox(1)'],
    ['//evil.example/path'],
    ['\\\\evil.example'],
    ['https:\\\\evil.example'],
    ['&#106;avascript:alert(1)'],
    ['https://bank.example@evil.example/'],
    ['/dashboard'],
    [''],
  ])('rejects %j', (url) => {
    expect(safeUrl(url)).toBeNull()
  })

  it('allows https and normalises it', () => {
    expect(safeUrl('https://Example.com/a?b=1#c')).toBe('https://example.com/a?b=1#c')
  })

  it('allows mailto and http by default', () => {
    expect(safeUrl('mailto:john@example.com')).toBe('mailto:john@example.com')
    expect(safeUrl('  http://example.com  ')).toBe('http://example.com/')
  })

  it('honours a narrower protocol list', () => {
    expect(safeUrl('http://example.com', { allowedProtocols: ['https:'] })).toBeNull()
  })

  it('allows same-origin paths only when asked, and never a protocol-relative one', () => {
    expect(safeUrl('/files/1?x=y', { allowRelative: true })).toBe('/files/1?x=y')
    expect(safeUrl('//evil.example', { allowRelative: true })).toBeNull()
    expect(safeUrl('/\\evil.example', { allowRelative: true })).toBeNull()
    expect(safeUrl('/..//evil.example', { allowRelative: true })).toBeNull()
  })
})

describe('header values', () => {
  it('refuses a value with CR or LF', () => {
    expect(() => assertNoHeaderInjection('Hello\r\nBcc: victim@example.com', 'subject')).toThrow(ValidationError)
    expect(() => assertNoHeaderInjection('Hello\nX: 1')).toThrow(/line breaks/)
  })

  it('accepts an ordinary value', () => {
    expect(() => assertNoHeaderInjection('Your invoice for March')).not.toThrow()
  })

  it('folds line breaks into a space and drops other control characters', () => {
    expect(escapeHeaderValue('Hello\r\nBcc: victim@example.com\u0000')).toBe('Hello Bcc: victim@example.com')
    expect(escapeHeaderValue('a\tb')).toBe('a\tb')
  })
})

describe('normalizeText', () => {
  it('composes to NFC so two spellings of a name compare equal', () => {
    expect(normalizeText('Zoe\u0308')).toBe('Zoë')
    expect(normalizeText('Zoe\u0308')).toBe(normalizeText('Zo\u00eb'))
  })

  it('strips control characters but keeps newlines and tabs', () => {
    expect(normalizeText('  a\u0000b\u0007c\r\nd\te\u007f\u0085  ')).toBe('abc\nd\te')
  })

  it('strips bidi overrides that would reorder the surrounding text', () => {
    expect(normalizeText('evil\u202Etxt.exe')).toBe('eviltxt.exe')
  })

  it('cuts to maxLength code points without splitting a surrogate pair', () => {
    expect(normalizeText('ab🦊cd', { maxLength: 3 })).toBe('ab🦊')
  })

  it('replaces lone surrogates, which PostgreSQL would reject', () => {
    expect(normalizeText('a\ud800b')).toBe('a\ufffdb')
  })
})

describe('sanitizeInput', () => {
  it('now escapes instead of deleting angle brackets, so quotes cannot break out', () => {
    expect(sanitizeInput('" onmouseover="alert(1)')).toBe('&quot; onmouseover=&quot;alert(1)')
    expect(sanitizeInput('a < b')).toBe('a &lt; b')
  })
})
