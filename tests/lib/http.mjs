// HTTP helpers the providers' own tests (tests/bank) share.

/** POSTs `form` as application/x-www-form-urlencoded to `url`, no redirect followed. */
export async function postForm(url, form, headers = {}) {
  const response = await fetch(url, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(form).toString(),
  });
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: response.status, headers: response.headers, text, json };
}
