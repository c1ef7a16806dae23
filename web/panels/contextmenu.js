// Nested context menus (right-click, combo dropdowns). Items: {label, action, submenu, disabled, checked,
// hint, separator}; a long list gets a filter box, as litegraph's combo menus do.

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

export function createMenus(container) {
  let stack = [];

  function closeFrom(level) {
    while (stack.length > level) stack.pop().remove();
  }

  function close() {
    closeFrom(0);
  }

  /** Puts the menu at (x, y) inside the window; a submenu that does not fit right of its parent row opens left. */
  function place(menu, x, y, parentRow = null) {
    container.appendChild(menu);
    const r = menu.getBoundingClientRect();
    const vw = window.innerWidth, vh = window.innerHeight;
    if (parentRow && x + r.width > vw - 4) x = parentRow.getBoundingClientRect().left - r.width + 2;
    menu.style.left = `${Math.max(4, Math.min(x, vw - r.width - 4))}px`;
    menu.style.top = `${Math.max(4, Math.min(y, vh - r.height - 4))}px`;
  }

  function build(items, level, { title, filter = items.length > 14 } = {}) {
    const menu = el('div', 'menu');
    menu.dataset.level = String(level);
    if (title) menu.appendChild(el('div', 'menu-title', title));
    const rows = [];
    let input = null;
    if (filter) {
      input = el('input', 'menu-filter');
      input.placeholder = 'Filter…';
      menu.appendChild(input);
    }
    const list = el('div', 'menu-list');
    menu.appendChild(list);
    for (const item of items) {
      if (item.separator) { list.appendChild(el('div', 'menu-sep')); continue; }
      const row = el('div', `menu-item${item.disabled ? ' disabled' : ''}${item.submenu ? ' has-sub' : ''}`);
      const label = el('span', 'menu-label', item.label);
      if (item.checked) row.classList.add('checked');
      row.appendChild(label);
      if (item.hint) row.appendChild(el('span', 'menu-hint', item.hint));
      row.addEventListener('pointerenter', () => {
        closeFrom(level + 1);
        if (item.submenu && !item.disabled) {
          const sub = typeof item.submenu === 'function' ? item.submenu() : item.submenu;
          const r = row.getBoundingClientRect();
          const child = build(sub, level + 1);
          stack.push(child);
          place(child, r.right - 2, r.top - 4, row);
        }
      });
      row.addEventListener('click', (e) => {
        e.stopPropagation();
        if (item.disabled || item.submenu) return;
        close();
        item.action?.();
      });
      rows.push({ row, item });
      list.appendChild(row);
    }
    if (input) {
      let active = -1;
      const visibleRows = () => rows.filter((r) => r.row.style.display !== 'none');
      const highlight = (i) => {
        const vis = visibleRows();
        rows.forEach((r) => r.row.classList.remove('active'));
        active = Math.max(0, Math.min(i, vis.length - 1));
        vis[active]?.row.classList.add('active');
        vis[active]?.row.scrollIntoView({ block: 'nearest' });
      };
      input.addEventListener('input', () => {
        const q = input.value.toLowerCase();
        for (const r of rows) r.row.style.display = r.item.label.toLowerCase().includes(q) ? '' : 'none';
        highlight(0);
      });
      input.addEventListener('keydown', (e) => {
        if (e.key === 'ArrowDown') { highlight(active + 1); e.preventDefault(); }
        else if (e.key === 'ArrowUp') { highlight(active - 1); e.preventDefault(); }
        else if (e.key === 'Enter') { visibleRows()[Math.max(active, 0)]?.row.click(); e.preventDefault(); }
        else if (e.key === 'Escape') close();
        e.stopPropagation();
      });
      setTimeout(() => input.focus(), 0);
    }
    return menu;
  }

  function open(items, [x, y], opts = {}) {
    close();
    const menu = build(items, 0, opts);
    stack.push(menu);
    place(menu, x, y);
    const selected = menu.querySelector('.menu-item.checked');
    selected?.scrollIntoView({ block: 'center' });
  }

  window.addEventListener('pointerdown', (e) => {
    if (stack.length && !stack.some((m) => m.contains(e.target))) close();
  }, true);
  window.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && stack.length) close();
  });

  return { open, close, get isOpen() { return stack.length > 0; } };
}
