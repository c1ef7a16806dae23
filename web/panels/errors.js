// The error panel: a refused run (validation errors per node and input) or a failed run (the node, the
// exception message and its traceback). Clicking a node entry shows that node.
import { h } from './dom.js';
import { shownNodeId } from '../subgraph/exec_ids.js';
import { subgraphPath } from '../subgraph/navigate.js';

/** The node an error's id shows on: "12:5" on subgraph instance 12 (on node 5 when 12 is open). */
const shownNode = (doc, id) => doc.graph.getNode(shownNodeId(id, subgraphPath(doc)) ?? id);

export function createErrorPanel(container, { onShowNode }) {
  const root = h('div.error-panel', { hidden: true, role: 'alert' });
  container.append(root);

  function close() {
    root.hidden = true;
    root.replaceChildren();
  }

  function show(title, body) {
    root.replaceChildren(h('div.error-head', {}, h('span.error-title', { text: title }),
      h('button.error-close', { title: 'Close', text: '×', onclick: close })), ...body);
    root.hidden = false;
  }

  return {
    close,
    /** A refused run: `message` from the server, `nodeErrors` Map(id -> {messages, inputs}). */
    showValidation(message, nodeErrors, doc) {
      const items = [...nodeErrors].map(([id, e]) => {
        const node = shownNode(doc, id);
        const name = node ? `${node.title ?? doc.defs.get(node.type)?.displayName ?? node.type} #${id}` : `node ${id}`;
        return h('div.error-node', { onclick: () => node && onShowNode(node) },
          h('div.error-node-name', { text: name }), ...e.messages.map((m) => h('div.error-msg', { text: m })));
      });
      show('Workflow refused', [h('div.error-summary', { text: message }), ...items]);
    },
    /** A failed run (execution_error). */
    showExecution(data, doc) {
      const node = doc && shownNode(doc, data.node_id);
      const trace = (data.traceback ?? []).join('');
      show(`Error in ${data.node_type ?? 'node'} #${data.node_id}`, [
        h('div.error-node', { onclick: () => node && onShowNode(node) },
          h('div.error-msg', { text: `${data.exception_type ?? 'Error'}: ${data.exception_message}` })),
        trace ? h('details.error-trace', {}, h('summary', { text: 'Traceback' }), h('pre', { text: trace })) : null,
      ]);
    },
    showMessage(title, message) {
      show(title, [h('div.error-summary', { text: message })]);
    },
  };
}
