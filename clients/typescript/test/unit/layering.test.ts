import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { expect, test } from 'vitest';

const core = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../../src/core',
);

test('the core entry imports no React (zustand only through zustand/vanilla)', () => {
  const offenders = readdirSync(core)
    .filter((f) => f.endsWith('.ts'))
    .filter((f) =>
      /from '(react|react-dom|zustand)(\/[^v][^']*)?'/.test(
        readFileSync(path.join(core, f), 'utf8'),
      ),
    );
  expect(offenders).toEqual([]);
  const stores = readFileSync(path.join(core, 'stores.ts'), 'utf8');
  expect(stores).toContain("from 'zustand/vanilla'");
});
