/**
 * Keys: prefix search over `admin.keys` (paged `state.keys` with version,
 * size and the last write), and the selected key as a live tree — WATCHed
 * through the client, each DELTA's locations highlighted.
 */

import type { DeltaEvent } from "@sodp/client";
import { type App, type View, writerLabel } from "./app.ts";
import { bytes, h, onSubmit, replace, time } from "./dom.ts";
import { Poller } from "./poll.ts";
import { changedPaths, renderTree } from "./tree.ts";

interface KeyRow {
  key: string;
  version: number;
  size: number;
  written_at: number | null;
  writer: number | null;
}

export class KeysView implements View {
  readonly name = "Keys";
  readonly root: HTMLElement;
  private readonly _prefix = h("input", { placeholder: "prefix (whole segments: game.players)", id: "keys-prefix", spellcheck: "false" });
  private readonly _rows = h("tbody");
  private readonly _more = h("button", { class: "small", hidden: true, onclick: () => void this._load(true) }, "More");
  private readonly _note = h("p", { class: "muted" });
  private readonly _detail = h("div", { class: "detail", id: "key-detail" }, h("p", { class: "muted" }, "Select a key."));
  private readonly _poll = new Poller(3000, () => this._load(false, true));
  private _next: string | undefined;
  private _shown: KeyRow[] = [];
  private _selected: string | undefined;
  private _unwatch: (() => void) | undefined;
  private _offDelta: (() => void) | undefined;

  constructor(private readonly _app: App) {
    const search = h("form", { class: "bar", onsubmit: onSubmit(() => void this._load(false)) }, this._prefix, h("button", null, "Search"));
    const table = h(
      "table",
      { class: "list", id: "keys-table" },
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          h("th", null, "key"),
          h("th", null, "version"),
          h("th", null, "size"),
          h("th", null, "last write"),
          h("th", null, "writer"),
        ),
      ),
      this._rows,
    );
    this.root = h("section", { class: "split" }, h("div", { class: "pane" }, search, table, this._more, this._note), this._detail);
  }

  show(): void {
    this._poll.start();
  }

  hide(): void {
    this._poll.stop();
  }

  private async _load(more: boolean, refresh = false): Promise<void> {
    const args: Record<string, unknown> = { limit: refresh ? Math.max(50, this._shown.length) : 50 };
    const prefix = this._prefix.value.trim();
    if (prefix) args.prefix = prefix;
    if (more && this._next) args.after = this._next;
    const a = await this._app.ask("admin.keys", args);
    if (!a.success) {
      replace(this._note, `${a.code ?? ""} ${String(a.data)}`);
      return;
    }
    const page = a.data as { keys: KeyRow[]; next?: string };
    this._shown = more ? [...this._shown, ...page.keys] : page.keys;
    this._next = page.next;
    this._more.hidden = page.next === undefined;
    replace(
      this._note,
      this._shown.length === 0 ? "No keys hold a value under this prefix." : `${this._shown.length} keys${page.next ? " (more…)" : ""}`,
    );
    replace(
      this._rows,
      this._shown.map((k) =>
        h(
          "tr",
          { class: k.key === this._selected ? "sel" : null, "data-key": k.key, onclick: () => this.select(k.key) },
          h("td", { class: "mono" }, k.key),
          h("td", { class: "num" }, String(k.version)),
          h("td", { class: "num" }, bytes(k.size)),
          h("td", null, time(k.written_at)),
          h("td", null, k.writer === null ? "—" : `#${k.writer}`),
        ),
      ),
    );
  }

  /** Watch `key` and show it live. */
  select(key: string): void {
    this._unwatch?.();
    this._offDelta?.();
    this._selected = key;
    for (const tr of this._rows.querySelectorAll("tr")) tr.classList.toggle("sel", tr.getAttribute("data-key") === key);
    const head = h("h2", { class: "mono" }, key);
    const meta = h("p", { class: "muted", id: "key-meta" }, "watching…");
    const last = h("div", { class: "last-delta", id: "key-last-delta" });
    const body = h("div", { id: "key-tree" });
    replace(this._detail, head, meta, last, body);
    let changed = new Set<string>();
    let clearTimer: ReturnType<typeof setTimeout> | undefined;
    this._offDelta = this._app.client.onDelta((d: DeltaEvent) => {
      if (d.key !== key) return;
      this._poll.now(); // the list shows the new version, size and writer too
      changed = changedPaths(d.ops, d.after);
      const removed = d.ops.filter((o) => o.op === "REMOVE").map((o) => o.path);
      replace(
        last,
        h("span", { class: "muted" }, `v${d.version} by `),
        h("span", { class: "writer", "data-version": String(d.version) }, writerLabel(this._app.writer(d.version))),
        h("code", null, ` ${d.ops.length} op${d.ops.length === 1 ? "" : "s"}: ${d.ops.map((o) => `${o.op} ${o.path}`).join(", ")}`),
        removed.length ? h("span", { class: "removed" }, ` removed ${removed.join(", ")}`) : null,
      );
      clearTimeout(clearTimer);
      clearTimer = setTimeout(() => {
        changed = new Set();
        for (const el of body.querySelectorAll(".changed")) el.classList.remove("changed");
      }, 4000);
    });
    const off = this._app.onWriters(() => {
      const el = last.querySelector(".writer");
      const v = Number(el?.getAttribute("data-version"));
      if (el && v) el.textContent = writerLabel(this._app.writer(v));
    });
    const unwatch = this._app.client.watch(key, (value, m) => {
      replace(meta, `version ${m.version}${m.initialized ? "" : " (no value)"} · ${m.source}`);
      replace(body, renderTree(value, m.source === "delta" ? changed : new Set()));
    });
    this._unwatch = () => {
      unwatch();
      off();
      clearTimeout(clearTimer);
    };
  }
}
