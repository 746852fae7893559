//! The browser adapter: the page's Wasm module. The package's loader (`pkg/consentry.js`)
//! owns `window` (the popup, the form posted into it, the listeners) and calls this module
//! through an ABI of four functions rather than generated glue, which would weigh more than
//! the module's own work:
//!
//! * import `env.fill_random(ptr, len)`: `crypto.getRandomValues` over that range of memory;
//! * export `input_buffer(len) -> ptr`: room for one call's input, which the loader fills;
//! * export `start_form(provider_len, user_len, scope_len, hint_len) -> len`: reads the four
//!   fields, UTF-8 one after another, from that room and writes its answer, `len` bytes of
//!   UTF-8 lines: `ok` then the start form's names and values, or `error`, the code and the
//!   description;
//! * export `output() -> ptr`: where that answer is, until the next call.
//!
//! Lines are safe as the answer's separator: every field the core accepts is free of control
//! characters. Everything here is synchronous, so a flow's secrets exist before the click's
//! task ends and the popup opens in the same tick. The start form is built and checked here,
//! by the same core the Worker parses it with. The outcome message is checked in the loader.
//!
//! The one `unsafe` of the crate is here, for the ABI: the exports, the import and the
//! hand-over of the input buffer. Each block says why it holds.
#![allow(unsafe_code)]

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use consentry_core::{Error, ErrorCode, PkceCodeVerifier, StartRequest, State};

extern "C" {
    /// Fills `len` bytes at `ptr` from `crypto.getRandomValues`. The loader's import throws
    /// (a `ConsentError`, through this module) when the platform has no CSPRNG.
    fn fill_random(ptr: *mut u8, len: usize);
}

/// The input room [`input_buffer`] made and [`start_form`] has not yet taken.
static INPUT: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
static INPUT_LEN: AtomicUsize = AtomicUsize::new(0);
/// The last answer, kept until the next call so the loader can read it.
static OUTPUT: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
static OUTPUT_LEN: AtomicUsize = AtomicUsize::new(0);

/// Makes room for `len` bytes of input (zeroed), replacing any room not yet taken.
#[no_mangle]
pub extern "C" fn input_buffer(len: usize) -> *mut u8 {
    drop(take(&INPUT, &INPUT_LEN));
    let room = vec![0u8; len].into_boxed_slice();
    let len = room.len();
    let room = Box::into_raw(room).cast::<u8>();
    INPUT.store(room, Ordering::Relaxed);
    INPUT_LEN.store(len, Ordering::Relaxed);
    room
}

/// Where the last answer of [`start_form`] is.
#[no_mangle]
pub extern "C" fn output() -> *const u8 {
    OUTPUT.load(Ordering::Relaxed)
}

/// Starts a flow: draws a fresh PKCE verifier (32 bytes) and an opaque `state` (16 bytes)
/// from `crypto.getRandomValues`, derives the verifier's S256 challenge, checks the fields by
/// the Worker's own rules, and answers with the start form for the hidden inputs of the form
/// POSTed into the popup. The form holds the verifier: it belongs in that POST body only,
/// never in a URL or in storage. An empty scope or hint is the same as none.
#[no_mangle]
pub extern "C" fn start_form(
    provider_len: usize,
    user_len: usize,
    scope_len: usize,
    hint_len: usize,
) -> usize {
    let input = take(&INPUT, &INPUT_LEN);
    let answer = match read_fields(&input, [provider_len, user_len, scope_len, hint_len]) {
        Some([provider, user, scope, hint]) => start(provider, user, scope, hint),
        None => Err(Error::new(
            ErrorCode::InvalidParameter,
            "the loader's input is not four UTF-8 fields",
        )),
    };
    let mut text = String::new();
    match answer {
        Ok(start) => {
            text.push_str("ok");
            for (name, value) in start.form_fields() {
                for part in [name, &value] {
                    text.push('\n');
                    text.push_str(part);
                }
            }
        }
        Err(error) => {
            for part in ["error", code_name(error.code()), error.description()] {
                text.push_str(part);
                text.push('\n');
            }
            text.pop();
        }
    }
    drop(take(&OUTPUT, &OUTPUT_LEN));
    let answer = text.into_bytes().into_boxed_slice();
    let len = answer.len();
    OUTPUT.store(Box::into_raw(answer).cast::<u8>(), Ordering::Relaxed);
    OUTPUT_LEN.store(len, Ordering::Relaxed);
    len
}

fn start(provider: &str, user: &str, scope: &str, hint: &str) -> Result<StartRequest, Error> {
    let verifier = PkceCodeVerifier::from_random_bytes(&random_bytes());
    let state = State::from_random_bytes(&random_bytes());
    StartRequest::new(provider, state, verifier, user, Some(scope), Some(hint))
}

/// The four fields, cut from `input` at the lengths the loader gave.
fn read_fields(input: &[u8], lengths: [usize; 4]) -> Option<[&str; 4]> {
    let mut rest = input;
    let mut fields = [""; 4];
    for (field, len) in fields.iter_mut().zip(lengths) {
        let (bytes, tail) = rest.split_at_checked(len)?;
        *field = core::str::from_utf8(bytes).ok()?;
        rest = tail;
    }
    rest.is_empty().then_some(fields)
}

/// `N` bytes from the platform's CSPRNG.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // SAFETY: the import writes exactly `N` bytes at the pointer, all inside `bytes`, and
    // keeps no reference to them.
    unsafe { fill_random(bytes.as_mut_ptr(), N) };
    bytes
}

/// Takes the box a pair of statics holds, leaving them empty.
fn take(at: &AtomicPtr<u8>, len: &AtomicUsize) -> Box<[u8]> {
    let room = at.swap(ptr::null_mut(), Ordering::Relaxed);
    let len = len.swap(0, Ordering::Relaxed);
    if room.is_null() {
        return Box::default();
    }
    // SAFETY: a non-null pointer here is one `Box<[u8]>::into_raw` gave for a box of `len`
    // bytes, stored with its length by `input_buffer` or `start_form`; the swap hands it
    // out once. The module is single-threaded and never re-entered: the loader calls it only
    // from JavaScript, and the one import it calls does not call back.
    unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(room, len)) }
}

/// The wire name of a code a start can fail with. Each name is fixed at compile time, so the
/// module carries these few strings, not the table of every code (1.4 KB of its gzip size).
/// The core's test `new_fails_only_with_the_codes_the_browser_names` keeps the list whole.
fn code_name(code: &ErrorCode) -> &'static str {
    const fn name(code: &ErrorCode) -> &'static str {
        match code.sdk_str() {
            Some(name) => name,
            None => "invalid_parameter",
        }
    }
    match code {
        ErrorCode::UnknownProvider => const { name(&ErrorCode::UnknownProvider) },
        ErrorCode::InvalidState => const { name(&ErrorCode::InvalidState) },
        ErrorCode::InvalidUser => const { name(&ErrorCode::InvalidUser) },
        _ => const { name(&ErrorCode::InvalidParameter) },
    }
}
