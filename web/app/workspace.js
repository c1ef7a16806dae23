// The open workflow tabs, with the active one, kept in localStorage so a reload restores them
// (ComfyUI's Comfy.Workflow.Persist), unsaved changes included.

import { WorkflowDoc } from './document.js';

export const WORKSPACE_KEY = 'chisel.workspace';

export class Workspace {
  constructor({ defs, storage }) {
    this.defs = defs;
    this.storage = storage;
    this.docs = [];
    this.activeKey = null;
  }

  get active() {
    return this.docs.find((d) => d.key === this.activeKey) ?? this.docs[0] ?? null;
  }

  open(doc, { activate = true } = {}) {
    this.docs.push(doc);
    if (activate || !this.activeKey) this.activeKey = doc.key;
    return doc;
  }

  /** Opens a workflow JSON in a new tab, or activates the tab that already shows that saved file. */
  openWorkflow(json, { name, path = null } = {}) {
    const existing = path && this.docs.find((d) => d.path === path);
    if (existing) {
      this.activeKey = existing.key;
      return existing;
    }
    return this.open(WorkflowDoc.fromWorkflow(json, { defs: this.defs, name, path }));
  }

  activate(key) {
    if (this.docs.some((d) => d.key === key)) this.activeKey = key;
  }

  /** Closes a tab; the neighbour becomes active. Returns the closed doc. */
  close(key) {
    const i = this.docs.findIndex((d) => d.key === key);
    if (i < 0) return null;
    const [doc] = this.docs.splice(i, 1);
    if (this.activeKey === key) this.activeKey = this.docs[Math.min(i, this.docs.length - 1)]?.key ?? null;
    return doc;
  }

  /** Unique tab name: "name", "name (2)", ... */
  uniqueName(name) {
    const taken = new Set(this.docs.map((d) => d.name));
    if (!taken.has(name)) return name;
    for (let i = 2; ; i++) if (!taken.has(`${name} (${i})`)) return `${name} (${i})`;
  }

  persist() {
    const tabs = this.docs.map((d) => ({ name: d.name, path: d.path, modified: d.modified, workflow: d.toWorkflow() }));
    const active = this.docs.findIndex((d) => d.key === this.activeKey);
    try {
      this.storage.setItem(WORKSPACE_KEY, JSON.stringify({ active, tabs }));
    } catch {
      // storage full or unavailable: the next save will try again
    }
  }

  /** Reopens the persisted tabs. Returns how many were restored (0 on first start). */
  restore() {
    let saved;
    try {
      saved = JSON.parse(this.storage.getItem(WORKSPACE_KEY) ?? 'null');
    } catch {
      saved = null;
    }
    if (!saved?.tabs?.length) return 0;
    for (const t of saved.tabs) {
      try {
        const doc = WorkflowDoc.fromWorkflow(t.workflow, { defs: this.defs, name: t.name, path: t.path });
        if (t.modified) doc.savedSnapshot = null;
        this.open(doc, { activate: false });
      } catch {
        // a tab that no longer loads is dropped rather than blocking the editor
      }
    }
    this.activeKey = this.docs[saved.active]?.key ?? this.docs[0]?.key ?? null;
    return this.docs.length;
  }
}
