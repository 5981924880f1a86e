/**
 * Whether an HTTP answer is worth asking again later: a server error, a timeout (408) or too
 * many requests (429), as the Standard Webhooks retry rules have it. Any other 4xx is the
 * request's own fault and stays so.
 */
export function retryableHttpStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}
