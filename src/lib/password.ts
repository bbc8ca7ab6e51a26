/**
 * Password strength for sign-up and password changes. Strength is judged by zxcvbn's guess
 * estimate rather than composition rules: "Password123!" satisfies every class rule and is
 * still among the first guesses of any cracker. The class flags are kept only because the
 * seed's callers show them as hints.
 */
import { ZxcvbnFactory } from '@zxcvbn-ts/core'
import type { TranslationKeys } from '@zxcvbn-ts/core'
import { adjacencyGraphs, dictionary } from '@zxcvbn-ts/language-common'

export const MIN_PASSWORD_LENGTH = 8
/**
 * Every character is fed to the password hash and to zxcvbn, so an unbounded password lets
 * one request buy unbounded CPU (bcrypt also silently ignores bytes past 72). 128 leaves
 * room for any passphrase a manager generates. Lengths are code points, not UTF-16 units,
 * so an emoji counts as one character, as the user sees it.
 */
export const MAX_PASSWORD_LENGTH = 128
/** zxcvbn 3 = "safely unguessable": at least 10^8 guesses, some protection even if a slow hash leaks. */
export const MIN_PASSWORD_SCORE = 3
/**
 * zxcvbn's matching grows faster than linearly with length: with the settings below its worst
 * cases measured ~10 ms at 64 code points and ~35 ms at 128, too slow for a request path. A
 * password whose first 64 characters are weak is judged weak, which only errs towards caution.
 */
export const ZXCVBN_MAX_INPUT = 64
/** Each user input becomes a dictionary built per call; bound how much a caller can pass in. */
const MAX_USER_INPUTS = 16
const MAX_USER_INPUT_LENGTH = 100

export interface PasswordValidation {
  isValid: boolean
  hasUpperCase: boolean
  hasLowerCase: boolean
  hasNumbers: boolean
  /** Anything that is neither a letter nor a digit in any script, spaces included. */
  hasSpecialChar: boolean
  /** In code points. */
  length: number
  tooShort: boolean
  tooLong: boolean
  /** The whole password, ignoring case, is on zxcvbn's common-password list. */
  isCommon: boolean
  /** zxcvbn score, 0 (trivially guessable) to 4 (very unguessable). */
  score: 0 | 1 | 2 | 3 | 4
  /** Sentences to show the user, most important first. */
  feedback: string[]
}

const COMMON_PASSWORD_MESSAGE = 'This is a commonly used password.'

// language-en is not installed; these are the only strings zxcvbn can emit.
const translations: TranslationKeys = {
  warnings: {
    straightRow: 'Straight rows of keys are easy to guess.',
    keyPattern: 'Short keyboard patterns are easy to guess.',
    simpleRepeat: 'Repeated characters like "aaa" are easy to guess.',
    extendedRepeat: 'Repeated patterns like "abcabcabc" are easy to guess.',
    sequences: 'Sequences like "abc" or "6543" are easy to guess.',
    recentYears: 'Recent years are easy to guess.',
    dates: 'Dates are easy to guess.',
    topTen: 'This is one of the most used passwords.',
    topHundred: 'This is a very frequently used password.',
    common: COMMON_PASSWORD_MESSAGE,
    similarToCommon: 'This is similar to a commonly used password.',
    wordByItself: 'A single word is easy to guess.',
    namesByThemselves: 'A single name or surname is easy to guess.',
    commonNames: 'Common names and surnames are easy to guess.',
    userInputs: 'Avoid your name, email address or other details about you.',
    pwned: 'This password has appeared in a data breach.',
  },
  suggestions: {
    l33t: "Predictable substitutions like '@' for 'a' do not help much.",
    reverseWords: 'Avoid common words spelled backwards.',
    allUppercase: 'Capitalise some letters, not all of them.',
    capitalization: 'Capitalise more than the first letter.',
    dates: 'Avoid dates and years that are connected to you.',
    recentYears: 'Avoid recent years.',
    associatedYears: 'Avoid years that are connected to you.',
    sequences: 'Avoid common character sequences.',
    repeated: 'Avoid repeated words and characters.',
    longerKeyboardPattern: 'Use longer keyboard patterns that change direction several times.',
    anotherWord: 'Add a few more uncommon words.',
    useWords: 'Use several words, but avoid common phrases.',
    noNeed: 'Symbols, digits and capitals are not required: length and uncommon words matter more.',
    pwned: 'If you use this password anywhere else, change it there too.',
  },
  timeEstimation: {
    ltSecond: 'less than a second',
    second: '{base} second',
    seconds: '{base} seconds',
    minute: '{base} minute',
    minutes: '{base} minutes',
    hour: '{base} hour',
    hours: '{base} hours',
    day: '{base} day',
    days: '{base} days',
    month: '{base} month',
    months: '{base} months',
    year: '{base} year',
    years: '{base} years',
    centuries: 'centuries',
  },
}

// Building the ranked dictionaries takes ~20 ms; only pay it when a password is first checked.
let zxcvbn: ZxcvbnFactory | undefined
let commonPasswords: Set<string> | undefined

function getZxcvbn(): ZxcvbnFactory {
  zxcvbn ??= new ZxcvbnFactory({
    dictionary,
    graphs: adjacencyGraphs,
    translations,
    maxLength: ZXCVBN_MAX_INPUT,
    // The l33t matcher tries every substitution combination; the default of 100 costs
    // ~30 ms on inputs like "p4ssw0rd" repeated, 20 still catches real-world l33t passwords.
    l33tMaxSubstitutions: 20,
  })
  return zxcvbn
}

function isCommonPassword(password: string): boolean {
  // Our own lookup rather than zxcvbn's matches: those also fire for passwords that merely
  // contain a common one, and this flag means the whole password is one.
  commonPasswords ??= new Set(dictionary['passwords-common'].map((p) => p.toLowerCase()))
  return commonPasswords.has(password.toLowerCase())
}

function countCodePoints(text: string): number {
  let count = 0
  for (const _ of text) count++
  return count
}

function firstCodePoints(text: string, n: number): string {
  let end = 0
  let count = 0
  for (const ch of text) {
    if (count++ === n) break
    end += ch.length
  }
  return text.slice(0, end)
}

export function validatePassword(password: string, userInputs: string[] = []): PasswordValidation {
  const length = countCodePoints(password)
  const tooShort = length < MIN_PASSWORD_LENGTH
  const tooLong = length > MAX_PASSWORD_LENGTH
  const isCommon = isCommonPassword(password)

  const inputs = userInputs
    .slice(0, MAX_USER_INPUTS)
    .map((input) => firstCodePoints(input, MAX_USER_INPUT_LENGTH))
    .filter((input) => input.length > 0)
  const result = getZxcvbn().check(firstCodePoints(password, ZXCVBN_MAX_INPUT), inputs)

  const feedback: string[] = []
  if (tooShort) feedback.push(`Use at least ${MIN_PASSWORD_LENGTH} characters.`)
  if (tooLong) feedback.push(`Use at most ${MAX_PASSWORD_LENGTH} characters.`)
  // zxcvbn's own "top ten" or "common" warning would only repeat ours.
  if (isCommon) feedback.push(COMMON_PASSWORD_MESSAGE)
  else if (result.feedback.warning) feedback.push(result.feedback.warning)
  feedback.push(...result.feedback.suggestions)
  if (result.score < MIN_PASSWORD_SCORE && feedback.length === 0) {
    feedback.push('Make it longer, for example with a few more uncommon words.')
  }

  return {
    isValid: !tooShort && !tooLong && !isCommon && result.score >= MIN_PASSWORD_SCORE,
    hasUpperCase: /\p{Lu}/u.test(password),
    hasLowerCase: /\p{Ll}/u.test(password),
    hasNumbers: /\p{Nd}/u.test(password),
    hasSpecialChar: /[^\p{L}\p{N}]/u.test(password),
    length,
    tooShort,
    tooLong,
    isCommon,
    score: result.score,
    feedback: [...new Set(feedback)],
  }
}
