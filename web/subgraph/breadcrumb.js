// The way back out of an open subgraph: "Workflow › Sampler › Inner", each step a button (DOM).

/** @param container element the bar goes in; onGo(depth) leaves open levels until `depth` remain. */
export function createBreadcrumb(container, { onGo }) {
  const bar = document.createElement('nav');
  bar.className = 'subgraph-breadcrumb';
  bar.setAttribute('aria-label', 'Subgraph');
  bar.hidden = true;
  container.append(bar);
  return {
    /** entries: [{label, depth}] from the workflow down (navigate.js breadcrumb); one entry hides the bar. */
    render(entries) {
      bar.hidden = entries.length < 2;
      bar.replaceChildren(...entries.flatMap((entry, i) => {
        const last = i === entries.length - 1;
        const step = document.createElement(last ? 'span' : 'button');
        step.textContent = entry.label;
        step.className = last ? 'current' : 'step';
        if (!last) step.addEventListener('click', () => onGo(entry.depth));
        if (i === 0) return [step];
        const sep = document.createElement('span');
        sep.className = 'sep';
        sep.textContent = '›';
        return [sep, step];
      }));
    },
  };
}
