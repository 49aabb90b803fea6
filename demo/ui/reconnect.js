// Trying again after a lost session or a server that went away: 1, 2, 4, then every 8 s, until
// it answers or the person gives up; and the words for it.

export const RETRY_MS = [1000, 2000, 4000, 8000];

export class Retry {
  constructor() {
    this.attempt = 0;
    this.timer = null;
    this.active = false; // a retry is scheduled or under way
  }

  // Schedule `run` after the next back-off; the sentence to show while waiting.
  schedule(reason, run) {
    const delay = RETRY_MS[Math.min(this.attempt, RETRY_MS.length - 1)];
    this.attempt += 1;
    this.active = true;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      run();
    }, delay);
    const sentence = /[.!?…]$/.test(reason) ? reason : `${reason}.`;
    return `${sentence} Trying again in ${delay / 1000} s (attempt ${this.attempt}). Press Stop to give up.`;
  }

  // The scheduled try is starting now.
  fire() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  cancel() {
    clearTimeout(this.timer);
    Object.assign(this, { attempt: 0, timer: null, active: false });
  }
}
