// The side panel with its icon rail (each icon labelled): node and model libraries, queue/assets, workflows.
// One panel open at a time.
import { h } from './dom.js';

export function createSidebar(rail, host, panels) {
  let open = null;
  const buttons = new Map();
  for (const [name, { icon, title, label }] of Object.entries(panels)) {
    const b = h('button.rail-btn', { title, 'aria-label': title, dataset: { panel: name }, onclick: () => toggle(name) },
      icon, h('span.rail-label', { text: label ?? name }));
    buttons.set(name, b);
    rail.append(b);
  }
  const bodies = new Map(Object.keys(panels).map((name) => [name, h('div.panel-body', { dataset: { panel: name } })]));
  host.replaceChildren(...bodies.values());

  function toggle(name) {
    open = open === name ? null : name;
    host.hidden = open === null;
    for (const [n, b] of buttons) b.classList.toggle('active', n === open);
    for (const [n, body] of bodies) body.hidden = n !== open;
    if (open) panels[open].onOpen?.();
    window.dispatchEvent(new Event('resize'));
  }

  host.hidden = true;
  return {
    toggle,
    body: (name) => bodies.get(name),
    isOpen: (name) => open === name,
  };
}
