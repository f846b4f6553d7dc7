import type { ParameterOption, ParameterSpec, ParameterValue } from '../../../protocol/template-fields.ts';

/**
 * Inputs generated from a template's parameters: strings and numbers as text/number fields,
 * bools as checkboxes, options as radios (up to 4) or a select, lists one item per line;
 * defaults filled, required ones marked, immutable ones said to be fixed once created.
 * Values are kept as the user typed them (strings) and converted by `toValues`.
 */
export type Draft = Record<string, string | boolean>;

export function initialDraft(parameters: ParameterSpec[], current: Record<string, unknown> = {}): Draft {
  const draft: Draft = {};
  for (const parameter of parameters) {
    const value = current[parameter.name] ?? parameter.default;
    if (parameter.type === 'bool') draft[parameter.name] = value === true;
    else if (Array.isArray(value)) draft[parameter.name] = value.join('\n');
    else draft[parameter.name] = value === undefined ? '' : String(value);
  }
  return draft;
}

/** The problem with one field's value, as a sentence (shown next to it), or undefined. */
export function checkParameter(parameter: ParameterSpec, raw: string | boolean): string | undefined {
  if (parameter.type === 'bool') return undefined;
  const text = String(raw);
  if (text.trim() === '') return parameter.default === undefined ? 'This parameter is required.' : undefined;
  const rules = parameter.validation;
  if (parameter.type === 'number') {
    const number = Number(text);
    if (!Number.isFinite(number)) return 'Enter a number.';
    if (rules?.min !== undefined && number < rules.min) return `Enter at least ${rules.min}.`;
    if (rules?.max !== undefined && number > rules.max) return `Enter at most ${rules.max}.`;
    return undefined;
  }
  const items = parameter.type === 'list' ? text.split('\n').filter((item) => item !== '') : [text];
  if (parameter.type === 'string') {
    if (rules?.min !== undefined && text.length < rules.min) return `Use at least ${rules.min} characters.`;
    if (rules?.max !== undefined && text.length > rules.max) return `Use at most ${rules.max} characters.`;
  } else {
    if (rules?.min !== undefined && items.length < rules.min) return `Give at least ${rules.min} items.`;
    if (rules?.max !== undefined && items.length > rules.max) return `Give at most ${rules.max} items.`;
  }
  if (rules?.regex) {
    let pattern: RegExp;
    try {
      pattern = new RegExp(rules.regex);
    } catch {
      return undefined; // the server checks it
    }
    if (items.some((item) => !pattern.test(item))) return rules.message ?? `The value must match ${rules.regex}.`;
  }
  return undefined;
}

export function toValues(parameters: ParameterSpec[], draft: Draft, only?: (parameter: ParameterSpec) => boolean): Record<string, ParameterValue> {
  const values: Record<string, ParameterValue> = {};
  for (const parameter of parameters) {
    if (only && !only(parameter)) continue;
    const raw = draft[parameter.name];
    if (parameter.type === 'bool') values[parameter.name] = raw === true;
    else if (String(raw).trim() === '' && parameter.default !== undefined) continue;
    else if (parameter.type === 'number') values[parameter.name] = Number(raw);
    else if (parameter.type === 'list') values[parameter.name] = String(raw).split('\n').filter((item) => item !== '');
    else values[parameter.name] = String(raw);
  }
  return values;
}

function optionValue(option: ParameterOption): string {
  return typeof option === 'object' ? String(option.value) : String(option);
}

function optionLabel(option: ParameterOption): string {
  return typeof option === 'object' ? (option.name ?? String(option.value)) : String(option);
}

export function ParameterFields({ parameters, draft, onChange, touched, locked }: {
  parameters: ParameterSpec[];
  draft: Draft;
  onChange(name: string, value: string | boolean): void;
  /** fields whose problems are shown (after an edit or a submit) */
  touched: Set<string>;
  /** immutable parameters cannot change after creation: shown read-only */
  locked?: boolean;
}) {
  return (
    <>
      {parameters.map((parameter) => {
        const id = `param-${parameter.name}`;
        const problem = touched.has(parameter.name) ? checkParameter(parameter, draft[parameter.name]) : undefined;
        const readOnly = locked && !parameter.mutable;
        const hint = [
          parameter.description,
          parameter.default === undefined && parameter.type !== 'bool' ? 'Required.' : undefined,
          !parameter.mutable ? 'Fixed once the workspace is created.' : undefined,
          parameter.type === 'list' ? 'One item per line.' : undefined,
        ].filter(Boolean).join(' ');
        const described = [hint ? `${id}-hint` : '', problem ? `${id}-problem` : ''].filter(Boolean).join(' ') || undefined;
        const label = (
          <>
            {parameter.displayName ?? parameter.name}
            {!parameter.mutable && <span className="tag">immutable</span>}
          </>
        );
        let input;
        if (parameter.type === 'bool') {
          input = (
            <label className="inline" htmlFor={id}>
              <input id={id} type="checkbox" checked={draft[parameter.name] === true} disabled={readOnly} aria-describedby={described} onChange={(event) => onChange(parameter.name, event.target.checked)} /> {label}
            </label>
          );
        } else if (parameter.options && parameter.options.length <= 4) {
          input = (
            <fieldset aria-describedby={described} disabled={readOnly}>
              <legend>{label}</legend>
              {parameter.options.map((option) => (
                <label key={optionValue(option)} className="inline">
                  <input type="radio" name={id} value={optionValue(option)} checked={draft[parameter.name] === optionValue(option)} onChange={() => onChange(parameter.name, optionValue(option))} /> {optionLabel(option)}
                </label>
              ))}
            </fieldset>
          );
        } else if (parameter.options) {
          input = (
            <label htmlFor={id}>{label}
              <select id={id} value={String(draft[parameter.name])} disabled={readOnly} aria-describedby={described} onChange={(event) => onChange(parameter.name, event.target.value)}>
                {parameter.default === undefined && <option value="">choose…</option>}
                {parameter.options.map((option) => <option key={optionValue(option)} value={optionValue(option)}>{optionLabel(option)}</option>)}
              </select>
            </label>
          );
        } else if (parameter.type === 'list') {
          input = (
            <label htmlFor={id}>{label}
              <textarea id={id} rows={3} value={String(draft[parameter.name])} readOnly={readOnly} aria-invalid={Boolean(problem)} aria-describedby={described} onChange={(event) => onChange(parameter.name, event.target.value)} />
            </label>
          );
        } else {
          input = (
            <label htmlFor={id}>{label}
              <input id={id} name={parameter.name} type={parameter.type === 'number' ? 'number' : 'text'} value={String(draft[parameter.name])} readOnly={readOnly} aria-invalid={Boolean(problem)} aria-describedby={described} onChange={(event) => onChange(parameter.name, event.target.value)} />
            </label>
          );
        }
        return (
          <div className="field" key={parameter.name}>
            {input}
            {hint && <small id={`${id}-hint`}>{hint}</small>}
            {problem && <small id={`${id}-problem`} className="problem-text" role="alert">{problem}</small>}
          </div>
        );
      })}
    </>
  );
}
