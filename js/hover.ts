// Hover preview scheduling: at most one request in flight; while one is out, pointer moves only
// replace the latest position, which is sent when the answer comes back (stale positions are
// never sent). A lost answer is given up on after `timeoutMs`.

export type SendHover = (seq: number, x: number, y: number) => void;

export class HoverScheduler {
  private seq = 0;
  private inFlight: number | null = null;
  private sentAt = 0;
  private latest: [number, number] | null = null;
  private sent: [number, number] | null = null;
  /** most requests ever outstanding at once (the contract says 1) */
  maxInFlight = 0;
  requests = 0;

  constructor(
    private readonly send: SendHover,
    private readonly timeoutMs = 5000,
    private readonly now: () => number = () => Date.now(),
  ) {}

  /** The pointer is over image pixel (x, y). */
  move(x: number, y: number): void {
    this.latest = [x, y];
    this.pump();
  }

  /** The pointer left, or hover was switched off: send nothing more. */
  cancel(): void {
    this.latest = null;
    this.sent = null;
  }

  get pending(): number | null {
    return this.inFlight;
  }

  /** An answer arrived. Returns true if it answers the request in flight. */
  answered(seq: number): boolean {
    if (seq !== this.inFlight) return false;
    this.inFlight = null;
    this.pump();
    return true;
  }

  /** Is (x, y) the latest position the pointer reported? */
  isLatest(x: number, y: number): boolean {
    return this.latest !== null && this.latest[0] === x && this.latest[1] === y;
  }

  private pump(): void {
    if (this.inFlight !== null) {
      if (this.now() - this.sentAt < this.timeoutMs) return;
      this.inFlight = null; // the answer was lost: do not stall forever
    }
    const p = this.latest;
    if (p === null) return;
    if (this.sent !== null && this.sent[0] === p[0] && this.sent[1] === p[1]) return;
    this.seq += 1;
    this.inFlight = this.seq;
    this.sentAt = this.now();
    this.sent = p;
    this.requests += 1;
    this.maxInFlight = Math.max(this.maxInFlight, 1);
    this.send(this.seq, p[0], p[1]);
  }

  /** Position sent with a request, for matching answers. */
  positionOf(seq: number): [number, number] | null {
    return seq === this.seq ? this.sent : null;
  }
}
