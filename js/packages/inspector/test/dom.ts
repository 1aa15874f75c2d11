/** A jsdom window as the global environment, so the inspector's modules run in Node. */
import { JSDOM } from "jsdom";

export const dom = new JSDOM("<!doctype html><html><body></body></html>", { url: "http://127.0.0.1/inspector" });
const g = globalThis as Record<string, unknown>;
g.window = dom.window;
g.document = dom.window.document;
for (const k of ["HTMLElement", "Node", "Event"]) {
  if (!(k in g)) g[k] = (dom.window as unknown as Record<string, unknown>)[k];
}

/** Makes the page hidden or visible, as a browser does when the tab changes. */
export function setVisible(visible: boolean): void {
  Object.defineProperty(dom.window.document, "visibilityState", { value: visible ? "visible" : "hidden", configurable: true });
  dom.window.document.dispatchEvent(new dom.window.Event("visibilitychange"));
}
