/**
 * A port a process must listen on is held by another process: said in one line naming the
 * variable that chose it, not as a stack trace (nothing in the code is wrong).
 */
export class PortInUseError extends Error {
  constructor(
    readonly variable: string,
    readonly port: number,
  ) {
    super(`${variable} ${port} is in use by another process`);
    this.name = 'PortInUseError';
  }

  /** `err` as a PortInUseError when listening on `port` failed for that reason, else as is. */
  static from(err: unknown, variable: string, port: number): unknown {
    return (err as NodeJS.ErrnoException | null)?.code === 'EADDRINUSE'
      ? new PortInUseError(variable, port)
      : err;
  }
}
