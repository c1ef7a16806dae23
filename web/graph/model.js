// The graph model: nodes, links, groups and reroutes as plain data, with the operations the editor needs.
// No drawing and no DOM here; the shapes follow ComfyUI's UI workflow (version 0.4) so that load and save are
// close to the identity (see serialize.js).

/** Node modes as ComfyUI stores them. */
export const Mode = Object.freeze({ ALWAYS: 0, NEVER: 2, BYPASS: 4 });

/** A refused graph edit, with a machine-readable code and the ids involved. */
export class GraphError extends Error {
  constructor(code, message, details = {}) {
    super(message);
    this.name = 'GraphError';
    this.code = code;
    this.details = details;
  }
}

/** Node ids are ints in 0.4 files, but arrive as strings too ("5"); numeric strings become numbers. */
export function normId(id) {
  if (typeof id === 'string' && /^-?\d+$/.test(id)) return Number(id);
  return id;
}

function typeSet(type) {
  return String(type ?? '').toUpperCase().split(',').map((t) => t.trim());
}

/** Whether an output of type `outType` may feed an input of type `inType` (litegraph's rule: equal,
 * a wildcard "*" or empty on either side, or an overlap of comma-separated unions, case-insensitive). */
export function typesCompatible(outType, inType) {
  if (outType === inType) return true;
  const a = typeSet(outType);
  const b = typeSet(inType);
  if (a.includes('*') || a.includes('') || b.includes('*') || b.includes('')) return true;
  return a.some((t) => b.includes(t));
}

/** One node: data only. Extra keys a file carries are kept as they are. */
export function makeNode(fields) {
  return {
    id: fields.id ?? null,
    type: fields.type,
    pos: fields.pos ? [fields.pos[0], fields.pos[1]] : [0, 0],
    size: fields.size ? [fields.size[0], fields.size[1]] : [200, 60],
    flags: fields.flags ? { ...fields.flags } : {},
    order: fields.order ?? 0,
    mode: fields.mode ?? Mode.ALWAYS,
    inputs: (fields.inputs ?? []).map((s) => ({ ...s, link: s.link ?? null })),
    outputs: (fields.outputs ?? []).map((s) => ({ ...s, links: s.links ? [...s.links] : [] })),
    properties: { ...(fields.properties ?? {}) },
    widgets_values: Array.isArray(fields.widgets_values) ? [...fields.widgets_values] : fields.widgets_values ?? [],
    ...pickExtra(fields),
  };
}

const NODE_KEYS = new Set(['id', 'type', 'pos', 'size', 'flags', 'order', 'mode', 'inputs', 'outputs',
  'properties', 'widgets_values']);

function pickExtra(fields) {
  const out = {};
  for (const [k, v] of Object.entries(fields)) if (!NODE_KEYS.has(k) && v !== undefined) out[k] = v;
  return out;
}

export class Graph {
  constructor({ id = null } = {}) {
    this.id = id;
    this.revision = 0;
    /** @type {Map<number|string, object>} insertion order = draw order (last is on top) */
    this.nodes = new Map();
    /** @type {Map<number, {id, origin_id, origin_slot, target_id, target_slot, type, parentId?}>} */
    this.links = new Map();
    this.groups = [];
    /** @type {Map<number, {id, parentId?, pos:[x,y]}>} native reroute points; a link's parentId is the
     * reroute nearest its target, each reroute's parentId the next one towards the origin. */
    this.reroutes = new Map();
    this.state = { lastNodeId: 0, lastLinkId: 0, lastRerouteId: 0, lastGroupId: 0 };
    this.config = {};
    this.extra = {};
  }

  getNode(id) {
    return this.nodes.get(normId(id));
  }

  addNode(fields) {
    const node = makeNode(fields);
    if (node.id === null || node.id === undefined || this.nodes.has(normId(node.id))) {
      node.id = ++this.state.lastNodeId;
    } else {
      node.id = normId(node.id);
      if (typeof node.id === 'number' && node.id > this.state.lastNodeId) this.state.lastNodeId = node.id;
    }
    this.nodes.set(node.id, node);
    return node;
  }

  removeNode(id) {
    const node = this.getNode(id);
    if (!node) return false;
    for (const link of this.linksOfNode(node.id)) this.removeLink(link.id);
    this.nodes.delete(node.id);
    return true;
  }

  /** Moves a node to the end of the draw order (on top). */
  bringToFront(id) {
    const node = this.getNode(id);
    if (!node) return;
    this.nodes.delete(node.id);
    this.nodes.set(node.id, node);
  }

  linksOfNode(id) {
    const nid = normId(id);
    const out = [];
    for (const link of this.links.values()) if (link.origin_id === nid || link.target_id === nid) out.push(link);
    return out;
  }

  /** Why a connection is refused, or null when it is allowed. */
  connectionError(originId, originSlot, targetId, targetSlot) {
    const origin = this.getNode(originId);
    const target = this.getNode(targetId);
    if (!origin) return `no node ${originId}`;
    if (!target) return `no node ${targetId}`;
    if (origin === target) return 'a node cannot feed itself';
    const out = origin.outputs[originSlot];
    const inp = target.inputs[targetSlot];
    if (!out) return `node ${originId} has no output ${originSlot}`;
    if (!inp) return `node ${targetId} has no input ${targetSlot}`;
    if (!typesCompatible(out.type, inp.type)) {
      return `type mismatch: ${out.type} output cannot feed ${inp.type} input "${inp.name}"`;
    }
    if (this.reaches(target.id, origin.id)) return 'the link would make a cycle';
    return null;
  }

  /** Whether `toId` is downstream of `fromId`. */
  reaches(fromId, toId) {
    const seen = new Set();
    const stack = [normId(fromId)];
    while (stack.length) {
      const id = stack.pop();
      if (id === normId(toId)) return true;
      if (seen.has(id)) continue;
      seen.add(id);
      const node = this.nodes.get(id);
      if (!node) continue;
      for (const out of node.outputs) for (const lid of out.links) {
        const l = this.links.get(lid);
        if (l) stack.push(l.target_id);
      }
    }
    return false;
  }

  /** Connects an output to an input, replacing the input's previous link. Throws GraphError when refused. */
  connect(originId, originSlot, targetId, targetSlot, { id = null, parentId } = {}) {
    const err = this.connectionError(originId, originSlot, targetId, targetSlot);
    if (err) throw new GraphError('connect_refused', err, { originId, originSlot, targetId, targetSlot });
    const origin = this.getNode(originId);
    const target = this.getNode(targetId);
    const old = target.inputs[targetSlot].link;
    if (old !== null && old !== undefined) this.removeLink(old);
    const linkId = id ?? ++this.state.lastLinkId;
    if (linkId > this.state.lastLinkId) this.state.lastLinkId = linkId;
    const link = {
      id: linkId, origin_id: origin.id, origin_slot: originSlot, target_id: target.id, target_slot: targetSlot,
      type: origin.outputs[originSlot].type,
    };
    if (parentId !== undefined && this.reroutes.has(parentId)) link.parentId = parentId;
    this.links.set(link.id, link);
    origin.outputs[originSlot].links.push(link.id);
    target.inputs[targetSlot].link = link.id;
    return link;
  }

  removeLink(linkId) {
    const link = this.links.get(linkId);
    if (!link) return false;
    this.links.delete(linkId);
    const origin = this.nodes.get(link.origin_id);
    const out = origin?.outputs[link.origin_slot];
    if (out) out.links = out.links.filter((l) => l !== linkId);
    const target = this.nodes.get(link.target_id);
    const inp = target?.inputs[link.target_slot];
    if (inp && inp.link === linkId) inp.link = null;
    if (link.parentId !== undefined) this.pruneReroutes();
    return true;
  }

  disconnectInput(nodeId, slot) {
    const inp = this.getNode(nodeId)?.inputs[slot];
    if (!inp || inp.link === null) return false;
    return this.removeLink(inp.link);
  }

  disconnectOutput(nodeId, slot) {
    const out = this.getNode(nodeId)?.outputs[slot];
    if (!out) return false;
    for (const lid of [...out.links]) this.removeLink(lid);
    return true;
  }

  /** The input slot index for a widget, adding a widget input ({widget:{name}}) when the node has none. */
  widgetInputSlot(nodeId, widgetName, type) {
    const node = this.getNode(nodeId);
    const idx = node.inputs.findIndex((i) => i.widget?.name === widgetName);
    if (idx >= 0) return idx;
    node.inputs.push({ name: widgetName, type, link: null, widget: { name: widgetName } });
    return node.inputs.length - 1;
  }

  // ---- groups ----

  addGroup({ title = 'Group', bounding, color = '#3f789e', font_size = 24 }) {
    const group = { id: ++this.state.lastGroupId, title, bounding: [...bounding], color, font_size, flags: {} };
    this.groups.push(group);
    return group;
  }

  removeGroup(group) {
    this.groups = this.groups.filter((g) => g !== group);
  }

  /** Nodes whose centre lies inside the group's rectangle (title bar included). */
  nodesInGroup(group) {
    const [gx, gy, gw, gh] = group.bounding;
    const out = [];
    for (const node of this.nodes.values()) {
      const cx = node.pos[0] + node.size[0] / 2;
      const cy = node.pos[1] + node.size[1] / 2;
      if (cx >= gx && cx <= gx + gw && cy >= gy && cy <= gy + gh) out.push(node);
    }
    return out;
  }

  // ---- reroutes ----

  /** The reroute ids a link passes through, from its origin side to its target side. */
  rerouteChain(link) {
    const chain = [];
    const seen = new Set();
    let id = link.parentId;
    while (id !== undefined && id !== null && this.reroutes.has(id) && !seen.has(id)) {
      seen.add(id);
      chain.push(id);
      id = this.reroutes.get(id).parentId;
    }
    return chain.reverse();
  }

  /** Inserts a reroute point into a link, on the segment that ends at `beforeId` (a reroute id of the chain,
   * or undefined for the last segment, the one that reaches the target). */
  addReroute(linkId, pos, { beforeId } = {}) {
    const link = this.links.get(linkId);
    if (!link) throw new GraphError('no_link', `no link ${linkId}`, { linkId });
    const id = ++this.state.lastRerouteId;
    if (beforeId === undefined) {
      const reroute = { id, pos: [pos[0], pos[1]] };
      if (link.parentId !== undefined) reroute.parentId = link.parentId;
      this.reroutes.set(id, reroute);
      link.parentId = id;
      return reroute;
    }
    const next = this.reroutes.get(beforeId);
    const reroute = { id, pos: [pos[0], pos[1]] };
    if (next.parentId !== undefined) reroute.parentId = next.parentId;
    next.parentId = id;
    this.reroutes.set(id, reroute);
    return reroute;
  }

  removeReroute(id) {
    const reroute = this.reroutes.get(id);
    if (!reroute) return false;
    for (const r of this.reroutes.values()) if (r.parentId === id) setParent(r, reroute.parentId);
    for (const l of this.links.values()) if (l.parentId === id) setParent(l, reroute.parentId);
    this.reroutes.delete(id);
    return true;
  }

  /** Link ids passing through each reroute. */
  rerouteLinkIds() {
    const out = new Map([...this.reroutes.keys()].map((id) => [id, []]));
    for (const link of this.links.values()) for (const rid of this.rerouteChain(link)) out.get(rid).push(link.id);
    return out;
  }

  /** Drops reroutes no link passes through any more. */
  pruneReroutes() {
    for (const [id, linkIds] of this.rerouteLinkIds()) {
      if (linkIds.length === 0) this.reroutes.delete(id);
    }
  }

  // ---- ordering and geometry ----

  /** Node ids in a dependency order (sources first); nodes on a cycle come last in insertion order. */
  executionOrder() {
    const indeg = new Map();
    for (const id of this.nodes.keys()) indeg.set(id, 0);
    for (const l of this.links.values()) {
      if (indeg.has(l.target_id) && this.nodes.has(l.origin_id)) indeg.set(l.target_id, indeg.get(l.target_id) + 1);
    }
    const ready = [...this.nodes.keys()].filter((id) => indeg.get(id) === 0);
    const order = [];
    for (let head = 0; head < ready.length; head++) {
      const id = ready[head];
      order.push(id);
      for (const out of this.nodes.get(id).outputs) for (const lid of out.links) {
        const l = this.links.get(lid);
        if (!l || !indeg.has(l.target_id)) continue;
        indeg.set(l.target_id, indeg.get(l.target_id) - 1);
        if (indeg.get(l.target_id) === 0) ready.push(l.target_id);
      }
    }
    if (order.length < this.nodes.size) {
      const placed = new Set(order);
      for (const id of this.nodes.keys()) if (!placed.has(id)) order.push(id);
    }
    return order;
  }

  /** [x, y, w, h] around the given nodes (title bars included), or null. */
  boundsOf(nodes, titleHeight = 30) {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const n of nodes) {
      x0 = Math.min(x0, n.pos[0]);
      y0 = Math.min(y0, n.pos[1] - titleHeight);
      x1 = Math.max(x1, n.pos[0] + n.size[0]);
      y1 = Math.max(y1, n.pos[1] + (n.flags.collapsed ? 0 : n.size[1]));
    }
    return x0 === Infinity ? null : [x0, y0, x1 - x0, y1 - y0];
  }
}

function setParent(obj, parentId) {
  if (parentId === undefined) delete obj.parentId;
  else obj.parentId = parentId;
}
