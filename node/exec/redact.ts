/**
 * Error text as a remote peer may see it: local file paths taken out.
 *
 * Why: errors such as "/home/op/.gridpipe/store/ab/cd.onnx: onnxruntime cannot load it" told any peer the
 * operator's user name and folder layout (issue 13, item 8). The server logs the full text locally and
 * sends the redacted one; the code and the rest of the message stay, so the peer still learns what failed.
 */

/** An absolute POSIX path (two segments at least) or a Windows drive path, after a start, space, quote or bracket. */
const PATH = /(^|[\s'"`([=,])(?:\/[^\s'"`()[\]:,;]+){2,}\/?|(^|[\s'"`([=,])[A-Za-z]:\\[^\s'"`()[\]:,;]*/g;

/** `message` with every local file path replaced by "<local file>". */
export function peerSafeMessage(message: string): string {
  return message.replace(PATH, (_m, a: string | undefined, b: string | undefined) => `${a ?? b ?? ''}<local file>`);
}
