// The docs page's script (api_docs.py): reads /openapi.json and draws every operation,
// grouped by tag, with its parameters, its schemas and a "try it" form that sends the
// request with fetch() and shows the answer: status, headers and body.
//
// Text from the document or from an answer is only ever set with textContent, never as
// HTML: a description or a response body cannot inject markup into the page.
"use strict";

const METHOD_ORDER = ["get", "post", "put", "patch", "delete"];

document.addEventListener("DOMContentLoaded", () => {
  fetch("/openapi.json", { headers: { Accept: "application/json" } })
    .then((response) => {
      if (!response.ok) throw new Error(`GET /openapi.json answered ${response.status}`);
      return response.json();
    })
    .then(drawDocument)
    .catch((error) => {
      document.getElementById("intro").textContent = `Could not load the document: ${error.message}`;
    });
});

function drawDocument(api) {
  document.getElementById("title").textContent = `${api.info.title} ${api.info.version}`;
  document.getElementById("intro").textContent = api.info.description || "";
  const byTag = new Map(api.tags.map((tag) => [tag.name, []]));
  for (const [path, item] of Object.entries(api.paths)) {
    for (const method of METHOD_ORDER) {
      if (item[method]) byTag.get(item[method].tags[0]).push({ path, method, operation: item[method] });
    }
  }
  const nav = document.getElementById("tags");
  const main = document.getElementById("operations");
  for (const [tag, operations] of byTag) {
    if (operations.length === 0) continue;
    nav.append(element("a", { href: `#tag-${tag}` }, tag));
    const section = element("section", { id: `tag-${tag}` }, element("h2", {}, tag));
    for (const entry of operations) section.append(drawOperation(api, entry));
    main.append(section);
  }
  document.body.dataset.ready = "true"; // every operation is drawn
}

function drawOperation(api, { path, method, operation }) {
  const details = element("details", { id: `op-${operation.operationId}`, "data-operation": operation.operationId });
  const summary = element("summary", {},
    element("span", { class: `method method-${method}` }, method.toUpperCase()),
    element("span", { class: "path" }, path), ` ${operation.summary}`);
  if (operation.security && operation.security.length > 0) summary.append(element("span", { class: "lock" }, "needs credentials"));
  details.append(summary, element("p", {}, operation.description || ""));

  const parameters = operation.parameters || [];
  if (parameters.length > 0) {
    const rows = parameters.map((parameter) => element("tr", {},
      element("td", {}, parameter.name), element("td", {}, parameter.in),
      element("td", {}, parameter.required ? "required" : ""),
      element("td", {}, element("code", {}, JSON.stringify(parameter.schema))),
      element("td", {}, parameter.description || "")));
    details.append(element("h4", {}, "Parameters"),
      element("table", {}, element("tr", {}, ...["name", "in", "", "schema", ""].map((h) => element("th", {}, h))), ...rows));
  }
  const body = operation.requestBody && operation.requestBody.content["application/json"];
  if (body) details.append(element("h4", {}, "Request body (application/json)"), schemaBlock(api, body.schema));
  details.append(element("h4", {}, "Responses"));
  for (const [status, response] of Object.entries(operation.responses)) {
    const content = response.content ? Object.entries(response.content)[0] : null;
    details.append(element("p", {}, element("strong", {}, status), ` ${response.description}`,
      content ? ` (${content[0]})` : ""));
    if (content && status.startsWith("2")) details.append(schemaBlock(api, content[1].schema));
  }
  details.append(tryItForm(path, method, parameters, body));
  return details;
}

function tryItForm(path, method, parameters, body) {
  const form = element("form", { class: "try-it" }, element("h4", {}, "Try it"));
  const inputs = parameters.map((parameter) => {
    const input = element("input", { type: "text", name: parameter.name, "data-in": parameter.in });
    if (parameter.example !== undefined) input.value = String(parameter.example);
    form.append(element("label", {}, `${parameter.name} (${parameter.in}) `, input));
    return input;
  });
  let bodyInput = null;
  if (body) {
    bodyInput = element("textarea", { name: "body", rows: "6" });
    bodyInput.value = JSON.stringify(body.example || {}, null, 2);
    form.append(element("label", { class: "body" }, "Body", bodyInput));
  }
  const answer = element("pre", { class: "answer" });
  form.append(element("div", {}, element("button", { type: "submit", class: "send" }, `Send ${method.toUpperCase()}`)), answer);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send(path, method, inputs, bodyInput, answer);
  });
  return form;
}

async function send(path, method, inputs, bodyInput, answer) {
  let url = path;
  const query = new URLSearchParams();
  const headers = { Accept: "application/json" };
  for (const input of inputs) {
    if (input.value === "") continue;
    if (input.dataset.in === "path") url = url.replace(`{${input.name}}`, encodeURIComponent(input.value));
    else if (input.dataset.in === "query") query.append(input.name, input.value);
    else if (input.dataset.in === "header") headers[input.name] = input.value;
  }
  if ([...query].length > 0) url += `?${query}`;
  const bearer = document.getElementById("bearer").value.trim();
  const apiKey = document.getElementById("api-key").value.trim();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (apiKey) headers["X-API-Key"] = apiKey;
  // Logged in with a session cookie (POST /v1/auth/session on this origin)? Its CSRF token
  // is in a cookie scripts may read, and unsafe methods must echo it in X-CSRF-Token.
  const csrf = csrfToken();
  if (csrf && !["GET", "HEAD"].includes(method.toUpperCase())) headers["X-CSRF-Token"] = csrf;
  const request = { method: method.toUpperCase(), headers };
  if (bodyInput) {
    headers["Content-Type"] = "application/json";
    request.body = bodyInput.value;
  }
  answer.textContent = `${request.method} ${url} ...`;
  try {
    const response = await fetch(url, request);
    const lines = [`HTTP ${response.status} ${response.statusText}`];
    response.headers.forEach((value, name) => lines.push(`${name}: ${value}`));
    const text = await response.text();
    answer.textContent = `${lines.join("\n")}\n\n${pretty(text)}`;
    answer.dataset.status = String(response.status);
  } catch (error) {
    answer.textContent = `The request failed: ${error.message}`;
  }
}

function csrfToken() {
  for (const pair of document.cookie.split("; ")) {
    const [name, value] = pair.split("=");
    if (name === "csrf_token" || name === "__Host-csrf_token") return value;
  }
  return null;
}

function schemaBlock(api, schema) {
  return element("pre", { class: "schema" }, JSON.stringify(resolve(api, schema, 0), null, 2));
}

// A schema with its $refs replaced by what they name (a few levels deep), for reading.
function resolve(api, schema, depth) {
  if (Array.isArray(schema)) return schema.map((part) => resolve(api, part, depth));
  if (schema === null || typeof schema !== "object") return schema;
  if (schema.$ref && depth < 4) {
    const name = schema.$ref.split("/").pop();
    return resolve(api, api.components.schemas[name], depth + 1);
  }
  return Object.fromEntries(Object.entries(schema).map(([key, value]) => [key, resolve(api, value, depth)]));
}

function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

// element("a", {href: "#x"}, "text", child, ...): a new element; strings become text nodes.
function element(name, attributes, ...children) {
  const node = document.createElement(name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}
