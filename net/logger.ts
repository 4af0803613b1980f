/** The node's structured logger: pino, JSON lines on stderr (stdout stays for command output). */
import pino, { type Level, type Logger } from 'pino';

/** A root logger at GRIDPIPE_LOG_LEVEL (default `fallbackLevel`), writing to stderr. */
export function createLogger(name = 'gridpipe', fallbackLevel: Level = 'info'): Logger {
  const level = (process.env.GRIDPIPE_LOG_LEVEL as Level | undefined) ?? fallbackLevel;
  return pino({ name, level }, pino.destination(2));
}
