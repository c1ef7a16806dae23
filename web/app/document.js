// One open workflow (a tab): its graph, undo history, view position, selection and the execution state shown
// on its nodes. Edits are grouped into undo steps by checkpoint(): call it once an edit is complete.

import { History } from '../graph/history.js';
import { loadWorkflow, saveWorkflow } from '../graph/serialize.js';
import { makeViewport } from '../canvas/viewport.js';
import { registerSubgraphDefs } from '../subgraph/definition.js';
import { flushSubgraphs, reopenPath, resetNav, subgraphPath } from '../subgraph/navigate.js';

/** What the canvas shows about a run on this workflow's nodes. */
export function emptyExecState() {
  return {
    promptIds: new Set(), // prompts queued from this tab
    running: null, // node id
    progress: new Map(), // node id -> 0..1
    errors: new Map(), // node id -> {inputs: Set<name>, messages: [string]}
    outputs: new Map(), // node id -> [{filename, subfolder, type}]
    panels: new Map(), // node id -> inspection panel (inspect.js parseInspect)
    previews: new Map(), // node id -> blob url
  };
}

export class WorkflowDoc {
  constructor({ graph, defs, name = 'Unsaved Workflow', path = null, key = null }) {
    this.key = key ?? `doc-${Math.random().toString(36).slice(2, 10)}`;
    this.graph = graph;
    this.defs = defs;
    this.name = name;
    this.path = path;
    this.vp = makeViewport(graph.extra.ds);
    this.selection = new Set();
    this.selectedGroups = new Set();
    this.selectedReroutes = new Set();
    this.history = new History();
    this.history.reset(this.snapshot());
    this.savedSnapshot = this.history.current;
    this.exec = emptyExecState();
  }

  static fromWorkflow(json, { defs, name, path = null, key = null }) {
    registerSubgraphDefs(json, defs); // instances' widgets need their subgraph's node definition to load
    return new WorkflowDoc({ graph: loadWorkflow(json, { defs }), defs, name, path, key });
  }

  /** The graph as undo sees it: the workflow without the view position. */
  snapshot() {
    const wf = saveWorkflow(flushSubgraphs(this), { defs: this.defs }); // the whole workflow, an open subgraph too
    delete wf.extra.ds;
    return JSON.stringify(wf);
  }

  /** Ends an edit: records an undo step if the graph changed. Returns whether it did. */
  checkpoint() {
    return this.history.record(this.snapshot());
  }

  /** Takes a change that is not an edit of its own (a node grown to show its results) into the current state. */
  absorb() {
    const wasSaved = !this.modified;
    this.history.current = this.snapshot();
    if (wasSaved) this.savedSnapshot = this.history.current;
  }

  undo() {
    return this.restore(this.history.undo());
  }

  redo() {
    return this.restore(this.history.redo());
  }

  /** Replaces the graph with a snapshot's; a subgraph open before stays open (as far as its instances remain). */
  restore(snapshot) {
    if (snapshot === null) return false;
    const json = JSON.parse(snapshot);
    registerSubgraphDefs(json, this.defs);
    const [path, vp, selection] = [subgraphPath(this), this.vp, this.selection];
    resetNav(this);
    this.graph = loadWorkflow(json, { defs: this.defs });
    const depth = reopenPath(this, path, vp);
    const alive = (id) => this.graph.nodes.has(id);
    this.selection = new Set(depth === path.length ? [...selection].filter(alive) : []);
    this.selectedGroups.clear();
    this.selectedReroutes.clear();
    return true;
  }

  /** Changed since it was opened or last saved (undoing back to that state clears it). */
  get modified() {
    return this.history.current !== this.savedSnapshot;
  }

  markSaved({ path = this.path, name = this.name } = {}) {
    this.path = path;
    this.name = name;
    this.savedSnapshot = this.history.current;
  }

  /** The UI workflow (version 0.4) with the view position, for saving and for extra_pnginfo. */
  toWorkflow() {
    return saveWorkflow(flushSubgraphs(this), { defs: this.defs, ds: this.vp });
  }

  selectedNodes() {
    return [...this.selection].map((id) => this.graph.getNode(id)).filter(Boolean);
  }
}
