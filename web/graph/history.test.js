import test from 'node:test';
import assert from 'node:assert/strict';
import { History } from './history.js';

test('undo and redo walk back and forth through recorded states', () => {
  const h = new History();
  h.reset('a');
  h.record('b');
  h.record('c');
  assert.equal(h.undo(), 'b');
  assert.equal(h.undo(), 'a');
  assert.equal(h.undo(), null);
  assert.equal(h.redo(), 'b');
  assert.equal(h.redo(), 'c');
  assert.equal(h.redo(), null);
});

test('an unchanged state is not a step', () => {
  const h = new History();
  h.reset('a');
  assert.equal(h.record('a'), false);
  assert.equal(h.canUndo, false);
});

test('a new edit after undo drops the redo branch', () => {
  const h = new History();
  h.reset('a');
  h.record('b');
  h.undo();
  h.record('x');
  assert.equal(h.canRedo, false);
  assert.equal(h.undo(), 'a');
});

test('the undo stack is bounded', () => {
  const h = new History({ limit: 3 });
  h.reset('0');
  for (let i = 1; i <= 10; i++) h.record(String(i));
  let n = 0;
  while (h.undo() !== null) n++;
  assert.equal(n, 3);
  assert.equal(h.current, '7');
});
