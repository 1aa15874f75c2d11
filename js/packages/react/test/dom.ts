/** A jsdom window as the global environment, so react-dom can render in Node. */
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>", { url: "http://127.0.0.1/" });
const g = globalThis as Record<string, unknown>;
g.window = dom.window;
g.document = dom.window.document;
g.IS_REACT_ACT_ENVIRONMENT = true;
for (const k of ["HTMLElement", "Node", "Event", "MouseEvent", "navigator"]) {
  if (!(k in g)) g[k] = (dom.window as unknown as Record<string, unknown>)[k];
}
