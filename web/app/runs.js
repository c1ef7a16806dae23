// Past runs as the assets and queue panels show them: one summary per /history entry (pure, no DOM).

/** A run's status as a mark (anything else: '•'). */
export const STATUS_MARK = Object.freeze({ success: '✓', error: '✕' });

/** Text inputs worth showing as a run's prompt: CLIPTextEncode's text, and any long STRING input named like one. */
const PROMPT_INPUTS = /^(text|text_g|text_l|prompt|positive|string)$/;

/**
 * {id, number, status, text, durationMs, finishedAt, images: [{filename, subfolder, type, node}], prompt, workflow}
 * for one history entry ({prompt: [number, id, prompt, extra_data, outputs], outputs, status: {messages}}).
 */
export function runSummary(id, entry) {
  const [number, , prompt = {}, extra = {}] = entry?.prompt ?? [];
  const messages = entry?.status?.messages ?? [];
  const at = (type) => messages.find((m) => m[0] === type)?.[1]?.timestamp;
  const started = at('execution_start');
  const ended = at('execution_success') ?? at('execution_error') ?? at('execution_interrupted');
  const images = [];
  for (const [node, out] of Object.entries(entry?.outputs ?? {})) {
    for (const im of out?.images ?? []) {
      if (!im?.filename) continue;
      images.push({ filename: im.filename, subfolder: im.subfolder ?? '', type: im.type ?? 'output', node });
    }
  }
  return {
    id, number: number ?? null,
    status: entry?.status?.status_str ?? (entry?.status?.completed ? 'success' : 'unknown'),
    text: promptText(prompt),
    durationMs: Number.isFinite(started) && Number.isFinite(ended) ? Math.max(0, ended - started) : null,
    finishedAt: ended ?? started ?? null,
    images, prompt, workflow: extra?.extra_pnginfo?.workflow ?? null,
  };
}

/** The run's prompt texts (text encoders' inputs, in node id order), joined with " | "; "" when there is none. */
export function promptText(prompt) {
  const ids = Object.keys(prompt ?? {}).sort((a, b) => Number(a) - Number(b) || a.localeCompare(b));
  const texts = [];
  for (const id of ids) {
    for (const [name, value] of Object.entries(prompt[id]?.inputs ?? {})) {
      if (PROMPT_INPUTS.test(name) && typeof value === 'string' && value.trim()) texts.push(value.trim());
    }
  }
  return texts.join(' | ');
}

/** "0.4 s", "12 s", "2 min 5 s" (null: ""). */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '';
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** Newest first: /history lists runs oldest first. */
export function runSummaries(history) {
  return Object.entries(history ?? {}).map(([id, e]) => runSummary(id, e)).reverse();
}

/** The body that queues a run again: its API prompt with the workflow it came from. */
export function rerunRequest(run) {
  return { prompt: run.prompt, workflow: run.workflow ?? undefined };
}

/** The images picked for comparing after a click on `key`: toggles it, keeping at most the last two picked. */
export function togglePick(picked, key) {
  if (picked.includes(key)) return picked.filter((k) => k !== key);
  return [...picked, key].slice(-2);
}
