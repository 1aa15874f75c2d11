/**
 * Polling that stops while the page is hidden: `every(ms, fn)` runs `fn`
 * now and then every `ms` while `document.visibilityState` is visible and
 * the poller is active; a page coming back into view polls at once. One
 * call in flight at a time (a slow server is never asked twice at once).
 */

export class Poller {
  private _timer: ReturnType<typeof setTimeout> | undefined;
  private _busy = false;
  private _active = false;
  private readonly _onVisible = () => {
    if (document.visibilityState === "visible" && this._active) this._tick();
  };

  constructor(
    private readonly _ms: number,
    private readonly _fn: () => Promise<void> | void,
  ) {}

  start(): void {
    if (this._active) return;
    this._active = true;
    document.addEventListener("visibilitychange", this._onVisible);
    this._tick();
  }

  stop(): void {
    this._active = false;
    clearTimeout(this._timer);
    this._timer = undefined;
    document.removeEventListener("visibilitychange", this._onVisible);
  }

  /** Poll now (after an action whose effect should show at once). */
  now(): void {
    if (this._active) this._tick();
  }

  private _tick(): void {
    clearTimeout(this._timer);
    this._timer = undefined;
    if (!this._active || document.visibilityState !== "visible") return; // resumed by visibilitychange
    if (!this._busy) {
      this._busy = true;
      Promise.resolve()
        .then(this._fn)
        .catch((err: unknown) => console.warn("[inspector] poll failed", err))
        .finally(() => {
          this._busy = false;
        });
    }
    this._timer = setTimeout(() => this._tick(), this._ms);
  }
}
