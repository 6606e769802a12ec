// What this server offers, read once from its OpenAPI document, so the pages show only the
// actions whose routes exist (a deployment running an older version simply lacks them).

let cached = null;

export function features() {
  if (!cached) {
    cached = fetch("/openapi.json")
      .then((response) => (response.ok ? response.json() : null))
      .catch(() => null)
      .then((doc) => {
        if (!doc || !doc.paths) return null;  // unknown: offer everything, errors will say
        const operations = new Set();
        for (const [path, item] of Object.entries(doc.paths)) {
          for (const method of Object.keys(item)) {
            operations.add(`${method.toUpperCase()} ${path.replace(/\{[^}]+\}/g, "{}")}`);
          }
        }
        return operations;
      });
  }
  return cached;
}

/** Whether `method path` (path parameters written `{}`) is offered; true when unknown. */
export const offers = (operations, method, path) => !operations || operations.has(`${method} ${path}`);
