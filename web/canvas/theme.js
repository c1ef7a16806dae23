// Colour palettes of the canvas (ComfyUI's dark and light palette values) and slot colours. The renderer takes
// the palette from scene.theme (the Comfy.ColorPalette setting); `theme` is the dark one.

export const SLOT_COLORS = Object.freeze({
  CLIP: '#FFD500', CLIP_VISION: '#A8DADC', CLIP_VISION_OUTPUT: '#ad7452', CONDITIONING: '#FFA931',
  CONTROL_NET: '#6EE7B7', IMAGE: '#64B5F6', LATENT: '#FF9CF9', MASK: '#81C784', MODEL: '#B39DDB',
  STYLE_MODEL: '#C2FFAE', VAE: '#FF6E6E', NOISE: '#B0B0B0', GUIDER: '#66FFFF', SAMPLER: '#ECB4B4',
  SIGMAS: '#CDFFCD', TAESD: '#DCC274', UPSCALE_MODEL: '#A0C4FF',
});

export const theme = Object.freeze({
  background: '#1b1b1d',
  gridMinor: '#242427',
  gridMajor: '#2c2c30',
  nodeBg: '#353535',
  nodeTitle: '#262626',
  nodeTitleText: '#c8c8c8',
  nodeText: '#a8a8a8',
  nodeOutline: '#000000',
  selected: '#ffffff',
  selectedText: '#ffffff',
  running: '#2ecc71',
  error: '#ff4545',
  bypassBg: '#8a2be2',
  widgetBg: '#222222',
  widgetOutline: '#4a4a4a',
  widgetText: '#dddddd',
  widgetLabel: '#999999',
  widgetDisabled: '#5a5a5a',
  link: '#9a9',
  linkDefault: '#9a9a9a',
  reroute: '#e0e0e0',
  missing: '#ff4545',
  highlight: '#ffcc33',
  // the inspect panels and sigma curves (canvas/inspector.js, canvas/plot.js)
  panelBg: '#151517',
  plotBg: '#1d1d1f',
  plotGrid: '#2e2e32',
  plotShade: 'rgba(0,0,0,0.35)',
  plotLine: '#cdffcd',
  plotMarker: 'rgba(255, 204, 51, 0.55)',
  sliderTrack: '#4a4a4e',
  sliderTick: '#8a8a8e',
  sliderKnob: '#f2f2f2',
  accent: '#4f8cff',
  hint: '#6a6a70',
  // the minimap (canvas/minimap.js)
  minimapBg: 'rgba(20, 20, 22, 0.85)',
  minimapNode: '#5b5b60',
  minimapMarked: '#d0d0d0',
  minimapView: '#ffffff',
  font: 'Inter, "Segoe UI", system-ui, sans-serif',
});

/** ComfyUI's light palette. */
export const lightTheme = Object.freeze({
  ...theme,
  background: '#d6d6d9',
  gridMinor: '#cbcbcf',
  gridMajor: '#bdbdc2',
  nodeBg: '#f7f7f7',
  nodeTitle: '#e2e2e4',
  nodeTitleText: '#222222',
  nodeText: '#444444',
  nodeOutline: '#666666',
  selected: '#1a73e8',
  selectedText: '#000000',
  running: '#1e9e55',
  widgetBg: '#ffffff',
  widgetOutline: '#a0a0a0',
  widgetText: '#222222',
  widgetLabel: '#555555',
  widgetDisabled: '#b0b0b0',
  linkDefault: '#777777',
  reroute: '#444444',
  panelBg: '#ececef',
  plotBg: '#f4f4f6',
  plotGrid: '#d2d2d7',
  plotShade: 'rgba(0,0,0,0.12)',
  plotLine: '#2e7d32',
  plotMarker: 'rgba(200, 140, 0, 0.7)',
  sliderTrack: '#b8b8bd',
  sliderTick: '#77777c',
  sliderKnob: '#ffffff',
  hint: '#88888e',
  minimapBg: 'rgba(236, 236, 240, 0.9)',
  minimapNode: '#a9a9b0',
  minimapMarked: '#3a3a40',
  minimapView: '#1a73e8',
});

export const PALETTES = Object.freeze({ dark: theme, light: lightTheme });

/** The palette of a setting value ('dark' when unknown). */
export function paletteOf(name) {
  return PALETTES[name] ?? theme;
}

/** ComfyUI's node colour presets: title colour and body colour. */
export const NODE_COLORS = Object.freeze({
  red: { color: '#322', bgcolor: '#533' },
  brown: { color: '#332922', bgcolor: '#593930' },
  green: { color: '#232', bgcolor: '#353' },
  blue: { color: '#223', bgcolor: '#335' },
  pale_blue: { color: '#2a363b', bgcolor: '#3f5159' },
  cyan: { color: '#233', bgcolor: '#355' },
  purple: { color: '#323', bgcolor: '#535' },
  yellow: { color: '#432', bgcolor: '#653' },
  black: { color: '#222', bgcolor: '#000' },
});

export const GROUP_COLORS = Object.freeze(['#3f789e', '#a1309b', '#b06634', '#8a8', '#88a', '#b58b2a', '#444',
  '#a88']);

export function slotColor(type) {
  return SLOT_COLORS[String(type).toUpperCase()] ?? theme.linkDefault;
}
