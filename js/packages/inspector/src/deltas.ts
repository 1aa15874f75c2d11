/**
 * The delta stream of a key or a pattern (`game.*`, `*`): every DELTA with
 * its version, ops and writer (session and subject, from `admin.writers`);
 * pause, filter by path, copy what is shown as JSON. At most `MAX_ENTRIES`
 * are kept (the oldest go first).
 */

import type { DeltaEvent, DeltaOp } from "@sodp/client";
import { type App, type View, writerLabel } from "./app.ts";
import { copy, h, jsonSafe, onSubmit, replace, short, time } from "./dom.ts";

export const MAX_ENTRIES = 500;

interface Entry {
  at: number;
  key: string;
  version: number;
  ops: readonly DeltaOp[];
}

export class DeltasView implements View {
  readonly name = "Deltas";
  readonly root: HTMLElement;
  private readonly _target = h("input", { placeholder: "key or pattern: game.board, game.*, *", id: "deltas-key", spellcheck: "false" });
  private readonly _filter = h("input", { placeholder: "filter by path (/players)", id: "deltas-filter", oninput: () => this._render() });
  private readonly _pause = h("button", { type: "button", id: "deltas-pause", onclick: () => this._togglePause() }, "Pause");
  private readonly _status = h("span", { class: "muted", id: "deltas-status" }, "not watching");
  private readonly _list = h("tbody", { id: "deltas-list" });
  private _entries: Entry[] = [];
  private _paused = false;
  private _held = 0;
  private _stop: (() => void) | undefined;
  private _watching = "";

  constructor(private readonly _app: App) {
    const form = h(
      "form",
      { class: "bar", onsubmit: onSubmit(() => this.watch(this._target.value.trim())) },
      this._target,
      h("button", null, "Watch"),
      this._pause,
      h("button", { type: "button", onclick: () => void this._copy() }, "Copy JSON"),
      h("button", { type: "button", onclick: () => this._clear() }, "Clear"),
    );
    const table = h(
      "table",
      { class: "list" },
      h(
        "thead",
        null,
        h("tr", null, h("th", null, "time"), h("th", null, "version"), h("th", null, "key"), h("th", null, "writer"), h("th", null, "ops")),
      ),
      this._list,
    );
    this.root = h("section", null, form, h("div", { class: "bar" }, this._filter, this._status), table);
    _app.onWriters(() => this._render());
  }

  show(): void {}
  hide(): void {}

  watch(target: string): void {
    this._stop?.();
    this._stop = undefined;
    if (!target) return;
    this._entries = [];
    this._watching = target;
    const client = this._app.client;
    const offDelta = client.onDelta((d: DeltaEvent) => {
      if (d.key !== target) return;
      this._entries.push({ at: Date.now(), key: d.key, version: d.version, ops: d.ops });
      if (this._entries.length > MAX_ENTRIES) this._entries.splice(0, this._entries.length - MAX_ENTRIES);
      if (this._paused) {
        this._held++;
        this._status.textContent = `paused · ${this._held} new`;
      } else this._render();
    });
    const unwatch = client.watch(target, (_v, m) => {
      if (m.source !== "delta") {
        this._watching = `${target} from version ${m.version}`;
        if (!this._paused) this._status.textContent = `watching ${this._watching}`;
      }
    });
    this._stop = () => {
      offDelta();
      unwatch();
    };
    this._render();
  }

  private _clear(): void {
    this._entries = [];
    this._render();
  }

  private _togglePause(): void {
    this._paused = !this._paused;
    this._pause.textContent = this._paused ? "Resume" : "Pause";
    this._held = 0;
    if (this._paused) this._status.textContent = "paused";
    else {
      this._status.textContent = this._watching ? `watching ${this._watching}` : "not watching";
      this._render();
    }
  }

  /** The entries the path filter lets through (an op path starting with it). */
  private _visible(): Entry[] {
    const f = this._filter.value.trim();
    if (!f) return this._entries;
    return this._entries.filter((e) => e.ops.some((o) => o.path.startsWith(f)));
  }

  private _render(): void {
    if (this._paused) return;
    const rows = this._visible()
      .slice()
      .reverse()
      .map((e) => {
        const keyOf = e.key.endsWith("*") ? (e.ops[0]?.path.split("/")[1] ?? e.key) : e.key;
        return h(
          "tr",
          { class: "delta" },
          h("td", null, time(e.at)),
          h("td", { class: "num" }, String(e.version)),
          h("td", { class: "mono" }, keyOf),
          h("td", null, writerLabel(this._app.writer(e.version))),
          h(
            "td",
            null,
            e.ops.map((o) =>
              h(
                "div",
                { class: "op mono" },
                h("b", { class: `op-${o.op}` }, o.op),
                ` ${o.path}`,
                "value" in o ? ` = ${short(o.value, 160)}` : "",
              ),
            ),
          ),
        );
      });
    replace(this._list, rows);
  }

  private async _copy(): Promise<void> {
    const out = this._visible().map((e) => {
      const w = this._app.writer(e.version);
      return { version: e.version, key: e.key, at: e.at, writer: w ?? null, ops: e.ops };
    });
    const ok = await copy(JSON.stringify(out, jsonSafe, 2));
    this._status.textContent = ok ? `copied ${out.length} deltas` : "copy failed";
  }
}
