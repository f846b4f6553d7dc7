import { z } from 'zod';

// Imported first by main.ts, before any schema exists: zod would otherwise probe for eval (to
// compile fast parsers) when the first object schema is built, and the page's
// Content-Security-Policy forbids eval, so every load would log a CSP violation.
z.config({ jitless: true });
