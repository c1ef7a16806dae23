import test from 'node:test';
import assert from 'node:assert/strict';
import { adjustWeight } from './prompt_weight.js';

test('Ctrl+Up on a selection wraps it with weight 1.05', () => {
  const r = adjustWeight('a red cat', 2, 5, 0.05);
  assert.equal(r.text, 'a (red:1.05) cat');
  assert.equal(r.text.slice(r.start, r.end), 'red');
});

test('with no selection the word at the cursor is weighted', () => {
  assert.equal(adjustWeight('a red cat', 3, 3, 0.05).text, 'a (red:1.05) cat');
});

test('repeating adjusts the existing weight', () => {
  let r = adjustWeight('a red cat', 2, 5, 0.05);
  r = adjustWeight(r.text, r.start, r.end, 0.05);
  assert.equal(r.text, 'a (red:1.1) cat');
  r = adjustWeight(r.text, r.start, r.end, -0.05);
  assert.equal(r.text, 'a (red:1.05) cat');
});

test('returning to weight 1 removes the parentheses', () => {
  const r = adjustWeight('a (red:1.05) cat', 3, 6, -0.05);
  assert.equal(r.text, 'a red cat');
  assert.equal(r.text.slice(r.start, r.end), 'red');
});

test('a cursor inside a weighted group adjusts that group', () => {
  assert.equal(adjustWeight('(red cat:1.2), sky', 3, 3, 0.1).text, '(red cat:1.3), sky');
});

test('a selection including the parentheses and weight is understood', () => {
  assert.equal(adjustWeight('x (blue:0.9) y', 2, 12, -0.05).text, 'x (blue:0.85) y');
});

test('Ctrl+Down below 1 gives a lower weight', () => {
  assert.equal(adjustWeight('dog', 0, 3, -0.05).text, '(dog:0.95)');
});

test('nothing to weight on whitespace', () => {
  assert.equal(adjustWeight('a  b', 2, 2, 0.05), null);
});
