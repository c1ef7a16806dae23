import test from 'node:test';
import assert from 'node:assert/strict';
import { commandFor } from './keymap.js';

const key = (key, mods = {}, tag = 'CANVAS') => ({ key, code: mods.code, ctrlKey: !!mods.ctrl, metaKey: !!mods.meta,
  shiftKey: !!mods.shift, altKey: !!mods.alt, target: { tagName: tag } });

test('ComfyUI\'s queue shortcuts', () => {
  assert.equal(commandFor(key('Enter', { ctrl: true })), 'queue');
  assert.equal(commandFor(key('Enter', { ctrl: true, shift: true })), 'queueFront');
  assert.equal(commandFor(key('Enter', { meta: true })), 'queue', 'Cmd works as Ctrl');
});

test('undo / redo / copy / paste / bypass / mute', () => {
  assert.equal(commandFor(key('z', { ctrl: true })), 'undo');
  assert.equal(commandFor(key('Z', { ctrl: true, shift: true })), 'redo');
  assert.equal(commandFor(key('y', { ctrl: true })), 'redo');
  assert.equal(commandFor(key('V', { ctrl: true, shift: true })), 'pasteWithLinks');
  assert.equal(commandFor(key('b', { ctrl: true })), 'bypass');
  assert.equal(commandFor(key('m', { ctrl: true })), 'mute');
  assert.equal(commandFor(key('Delete')), 'delete');
});

test('Alt+C collapses whatever character the layout produces', () => {
  assert.equal(commandFor(key('ç', { alt: true, code: 'KeyC' })), 'collapse');
});

test('plain keys typed into a text field are not shortcuts, Ctrl+Enter still queues', () => {
  assert.equal(commandFor(key('p', {}, 'TEXTAREA')), null);
  assert.equal(commandFor(key('Backspace', {}, 'INPUT')), null);
  assert.equal(commandFor(key('z', { ctrl: true }, 'TEXTAREA')), null, 'the text field keeps its own undo');
  assert.equal(commandFor(key('Enter', { ctrl: true }, 'TEXTAREA')), 'queue');
});

test('user bindings replace a command\'s default keys; a chord finds what it is bound to', async () => {
  const { withBindings, boundTo, commandFor: cmdFor } = await import('./keymap.js');
  const table = withBindings({ redo: 'Ctrl+K', pin: '' });
  assert.deepEqual(table.filter((s) => s.command === 'redo').map((s) => s.keys), ['Ctrl+K']);
  assert.equal(table.some((s) => s.command === 'pin'), false);
  assert.equal(cmdFor({ key: 'k', ctrlKey: true, target: {} }, table), 'redo');
  assert.equal(cmdFor({ key: 'y', ctrlKey: true, target: {} }, table), null);
  assert.deepEqual(boundTo('Ctrl+Z', table), ['undo']);
});
