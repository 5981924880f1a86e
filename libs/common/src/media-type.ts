/** A media type without its parameters, lower-cased: `Text/CSV; charset=utf-8` is `text/csv`. */
export function baseMediaType(type: string): string {
  return type.split(';')[0].trim().toLowerCase();
}

/**
 * Types that say nothing of a file, its parameters aside: application/octet-stream (what curl
 * and most clients label a .ogg, .mp3 or .mp4 part, and servers a file they do not know), and
 * text/plain (what a multipart part without a Content-Type is read as, as Python's requests
 * sends a file). Wherever a file's type is chosen, they give way to any other.
 */
const GENERIC_MEDIA_TYPES: ReadonlySet<string> = new Set([
  'application/octet-stream',
  'text/plain',
]);

/** Whether a media type says nothing of a file (GENERIC_MEDIA_TYPES). */
export function isGenericMediaType(type: string): boolean {
  return GENERIC_MEDIA_TYPES.has(baseMediaType(type));
}
