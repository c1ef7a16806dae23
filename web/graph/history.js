// Undo/redo over snapshots of the serialized graph (as ComfyUI's changeTracker does): an edit is whatever
// changed between two checkpoints, so a drag, a paste or a multi-node delete is one step however many
// model operations it took. Snapshots are opaque strings here; the caller decides what they hold.

export class History {
  constructor({ limit = 100 } = {}) {
    this.limit = limit;
    this.undoStack = [];
    this.redoStack = [];
    this.current = null;
  }

  /** Starts over from `snapshot` (a freshly opened workflow): nothing to undo. */
  reset(snapshot) {
    this.undoStack = [];
    this.redoStack = [];
    this.current = snapshot;
  }

  /** Records `snapshot` as the new state if it differs from the current one. Returns whether it did. */
  record(snapshot) {
    if (snapshot === this.current) return false;
    if (this.current !== null) {
      this.undoStack.push(this.current);
      if (this.undoStack.length > this.limit) this.undoStack.shift();
    }
    this.redoStack = [];
    this.current = snapshot;
    return true;
  }

  get canUndo() {
    return this.undoStack.length > 0;
  }

  get canRedo() {
    return this.redoStack.length > 0;
  }

  /** The snapshot to restore, or null when there is nothing to undo. */
  undo() {
    if (!this.canUndo) return null;
    this.redoStack.push(this.current);
    this.current = this.undoStack.pop();
    return this.current;
  }

  redo() {
    if (!this.canRedo) return null;
    this.undoStack.push(this.current);
    this.current = this.redoStack.pop();
    return this.current;
  }
}
