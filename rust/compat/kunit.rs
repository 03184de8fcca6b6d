// SPDX-License-Identifier: GPL-2.0

//! KUnit suites from a loadable Rust module.
//!
//! Linux 6.12 has no `#[kunit_tests]`. A module registers suites by placing
//! pointers to them in its `.kunit_test_suites` section, which the module
//! loader hands to KUnit; KUnit then runs them right after `init` and prints
//! KTAP to the kernel log. This file is the thin unsafe layer for that; test
//! cases are plain safe functions taking [`Test`].
//!
//! Stands in for upstream's `#[kunit_tests]` (and its `kunit_assert!`
//! family, here expectations that let a case go on); remove when the kernel
//! crate has `#[kunit_tests]`.

use core::{ffi::c_void, fmt, mem::MaybeUninit, ptr::NonNull};
use kernel::{bindings, str::CStr};

/// The KUnit test a case runs in.
pub(crate) struct Test {
    raw: NonNull<bindings::kunit>,
}

impl Test {
    /// Records a failed expectation; the case goes on and is reported as failed.
    pub(crate) fn fail(
        &mut self,
        loc: &'static Location,
        assert: &'static UnaryAssert,
        msg: Option<fmt::Arguments<'_>>,
    ) {
        let (fmt, arg) = match &msg {
            Some(args) => (
                kernel::c_str!("%pA").as_char_ptr(),
                core::ptr::from_ref(args).cast::<c_void>(),
            ),
            None => (core::ptr::null(), core::ptr::null()),
        };
        // SAFETY: `self.raw` is the live test KUnit passed to the running case
        // (see `run`); `loc` and `assert` are statics; `fmt` is null or a
        // `%pA` format whose argument is a valid `fmt::Arguments`, which
        // KUnit formats before returning.
        unsafe {
            bindings::__kunit_do_failed_assertion(
                self.raw.as_ptr(),
                &loc.0,
                bindings::kunit_assert_type_KUNIT_EXPECTATION,
                &assert.0.assert,
                Some(bindings::kunit_unary_assert_format),
                fmt,
                arg,
            )
        };
    }
}

/// Where an expectation is written (`struct kunit_loc`).
#[repr(transparent)]
pub(crate) struct Location(bindings::kunit_loc);

// SAFETY: only ever read, and it points to static, immutable C strings.
unsafe impl Sync for Location {}

impl Location {
    pub(crate) const fn new(file: &'static CStr, line: u32) -> Self {
        Self(bindings::kunit_loc {
            file: file.as_char_ptr(),
            line: line as i32,
        })
    }
}

/// The condition an expectation checked (`struct kunit_unary_assert`).
#[repr(transparent)]
pub(crate) struct UnaryAssert(bindings::kunit_unary_assert);

// SAFETY: only ever read, and it points to a static, immutable C string.
unsafe impl Sync for UnaryAssert {}

impl UnaryAssert {
    pub(crate) const fn new(condition: &'static CStr) -> Self {
        Self(bindings::kunit_unary_assert {
            assert: bindings::kunit_assert {},
            condition: condition.as_char_ptr(),
            expected_true: true,
        })
    }
}

/// Runs one case; called from the `extern "C"` function [`kunit_suite!`] makes.
///
/// # Safety
///
/// `raw` must be the `struct kunit` KUnit passed to the case's `run_case`.
pub(crate) unsafe fn run(raw: *mut bindings::kunit, case: fn(&mut Test)) {
    if let Some(raw) = NonNull::new(raw) {
        case(&mut Test { raw });
    }
}

/// A `struct kunit_case` for `run_case`, named `name`.
pub(crate) const fn case(
    name: &'static CStr,
    run_case: unsafe extern "C" fn(*mut bindings::kunit),
) -> bindings::kunit_case {
    let mut case = case_end();
    case.name = name.as_char_ptr();
    case.run_case = Some(run_case);
    case
}

/// The all-zero entry that ends a case array.
pub(crate) const fn case_end() -> bindings::kunit_case {
    // SAFETY: all-zero is a valid `kunit_case`: null pointers, `None` function
    // pointers, and enum values 0 (`KUNIT_SUCCESS`, `KUNIT_SPEED_UNSET`).
    unsafe { MaybeUninit::zeroed().assume_init() }
}

/// A `struct kunit_suite` named `name` running the zero-terminated `cases`.
pub(crate) const fn suite(
    name: &'static str,
    cases: *mut bindings::kunit_case,
) -> bindings::kunit_suite {
    // SAFETY: all-zero is a valid `kunit_suite` (null pointers, `None`
    // callbacks, zero counters), as in C's `static struct kunit_suite s = {}`.
    let mut suite: bindings::kunit_suite = unsafe { MaybeUninit::zeroed().assume_init() };
    let bytes = name.as_bytes();
    // Keep the terminating NUL: at most 255 name bytes, none of them NUL.
    assert!(bytes.len() < suite.name.len());
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i] != 0);
        suite.name[i] = bytes[i] as _;
        i += 1;
    }
    suite.test_cases = cases;
    suite
}

/// Checks `cond` in a KUnit case; on failure reports the expression, file,
/// line and an optional formatted message, and lets the case go on.
macro_rules! kunit_expect {
    ($test:expr, $cond:expr $(,)?) => {
        $crate::compat::kunit::kunit_expect!(@report $test, $cond, None)
    };
    ($test:expr, $cond:expr, $($msg:tt)+) => {
        $crate::compat::kunit::kunit_expect!(@report $test, $cond, Some(format_args!($($msg)+)))
    };
    (@report $test:expr, $cond:expr, $msg:expr) => {
        if !$cond {
            static LOC: $crate::compat::kunit::Location =
                $crate::compat::kunit::Location::new(kernel::c_str!(file!()), line!());
            static ASSERT: $crate::compat::kunit::UnaryAssert =
                $crate::compat::kunit::UnaryAssert::new(kernel::c_str!(stringify!($cond)));
            $test.fail(&LOC, &ASSERT, $msg);
        }
    };
}
pub(crate) use kunit_expect;

/// Checks `left == right` in a KUnit case, printing both values on failure.
macro_rules! kunit_expect_eq {
    ($test:expr, $left:expr, $right:expr $(,)?) => {{
        let (left, right) = (&$left, &$right);
        $crate::compat::kunit::kunit_expect!(
            $test,
            *left == *right,
            "{} == {}: left is {:?}, right is {:?}",
            stringify!($left),
            stringify!($right),
            left,
            right
        );
    }};
}
pub(crate) use kunit_expect_eq;

/// Defines a KUnit suite `$name` from safe `fn(&mut Test)` cases and
/// registers it for KUnit to run when the module loads. A case may carry
/// `#[cfg(...)]`.
macro_rules! kunit_suite {
    ($name:literal, [$($(#[$meta:meta])* $case:ident),+ $(,)?]) => {
        const _: () = {
            const N: usize = [$($(#[$meta])* stringify!($case)),+].len();

            static mut CASES: [kernel::bindings::kunit_case; N + 1] = [
                $($(#[$meta])* $crate::compat::kunit::case(kernel::c_str!(stringify!($case)), {
                    extern "C" fn run_case(raw: *mut kernel::bindings::kunit) {
                        // SAFETY: KUnit calls `run_case` with the case's live test.
                        unsafe { $crate::compat::kunit::run(raw, $case) }
                    }
                    run_case
                }),)+
                $crate::compat::kunit::case_end(),
            ];

            static mut SUITE: kernel::bindings::kunit_suite =
                $crate::compat::kunit::suite($name, core::ptr::addr_of_mut!(CASES).cast());

            // The module loader collects this section into `mod->kunit_suites`.
            #[used(compiler)]
            #[link_section = ".kunit_test_suites"]
            static mut SUITE_ENTRY: *mut kernel::bindings::kunit_suite =
                core::ptr::addr_of_mut!(SUITE);
        };
    };
}
pub(crate) use kunit_suite;
