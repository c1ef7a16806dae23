// Prompt-weight editing (Ctrl+Up / Ctrl+Down in a prompt box), as ComfyUI's editAttention does:
// the selection, or the word or (group:weight) at the cursor, becomes (text:w±delta); weight 1 unwraps.

const WEIGHT_AFTER = /^:(-?\d+(?:\.\d+)?)\)/;

function round(w) {
  return Number(w.toFixed(2));
}

/** The (…) group around the cursor whose content ends in ":weight", as [innerStart, innerEnd] or null. */
function enclosingGroup(text, pos) {
  let depth = 0;
  for (let i = pos - 1; i >= 0; i--) {
    if (text[i] === ')') depth++;
    else if (text[i] === '(') {
      if (depth === 0) {
        let d = 0;
        for (let j = i + 1; j < text.length; j++) {
          if (text[j] === '(') d++;
          else if (text[j] === ')') {
            if (d === 0) {
              const inner = text.slice(i + 1, j);
              const m = inner.match(/:(-?\d+(?:\.\d+)?)$/);
              return m && j >= pos ? [i + 1, j - m[0].length] : null;
            }
            d--;
          }
        }
        return null;
      }
      depth--;
    }
  }
  return null;
}

function wordAt(text, pos) {
  const stop = /[\s,()]/;
  let s = pos, e = pos;
  while (s > 0 && !stop.test(text[s - 1])) s--;
  while (e < text.length && !stop.test(text[e])) e++;
  return s < e ? [s, e] : null;
}

/**
 * Adjusts the weight of the selected text. Returns {text, start, end} (the new text and the selection of the
 * weighted words inside it), or null when there is nothing to weight.
 */
export function adjustWeight(text, start, end, delta) {
  let s = start, e = end;
  if (s === e) {
    const range = enclosingGroup(text, s) ?? wordAt(text, s);
    if (!range) return null;
    [s, e] = range;
  }
  while (s < e && /\s/.test(text[s])) s++;
  while (e > s && /\s/.test(text[e - 1])) e--;
  if (s === e) return null;
  let inner = text.slice(s, e);
  // a selection that includes the parentheses and weight: "(word:1.1)"
  const whole = inner.match(/^\((.*):(-?\d+(?:\.\d+)?)\)$/s);
  let weight = 1;
  let from = s, to = e;
  if (whole) {
    inner = whole[1];
    weight = Number(whole[2]);
  } else {
    const after = text.slice(e).match(WEIGHT_AFTER);
    if (text[s - 1] === '(' && after) {
      weight = Number(after[1]);
      from = s - 1;
      to = e + after[0].length;
    }
  }
  const w = round(weight + delta);
  const replacement = w === 1 ? inner : `(${inner}:${w})`;
  const out = text.slice(0, from) + replacement + text.slice(to);
  const innerStart = from + (w === 1 ? 0 : 1);
  return { text: out, start: innerStart, end: innerStart + inner.length };
}
