//! `#[matrix]`: writes an end-to-end test once and runs it on every runtime backend.
//!
//! ```ignore
//! #[matrix]
//! fn login_works() { /* uses conduit_tests::test_descriptor(..) */ }
//! ```
//! becomes the function itself plus a module of the same name with one `#[test]` per
//! backend (`login_works::glommio`, `login_works::tokio`), each running the function
//! under `conduit_tests::on_runtime`, which makes the test helpers build servers and
//! clients on that backend. Test attributes (`#[ignore]`, `#[should_panic]`) move to
//! the generated tests.

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, ItemFn};

/// Runs the annotated test function once per runtime backend (see the crate docs).
#[proc_macro_attribute]
pub fn matrix(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[matrix] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let mut func = parse_macro_input!(item as ItemFn);
    let name = func.sig.ident.clone();
    let is_test_attr =
        |a: &syn::Attribute| a.path().is_ident("ignore") || a.path().is_ident("should_panic");
    let test_attrs: Vec<syn::Attribute> = func
        .attrs
        .iter()
        .filter(|a| is_test_attr(a))
        .cloned()
        .collect();
    func.attrs.retain(|a| !is_test_attr(a));
    quote! {
        #func

        #[doc = "The test above, once per runtime backend."]
        mod #name {
            #[test]
            #(#test_attrs)*
            fn glommio() {
                ::conduit_tests::on_runtime(::conduit::Runtime::Glommio, super::#name);
            }

            #[test]
            #(#test_attrs)*
            fn tokio() {
                ::conduit_tests::on_runtime(::conduit::Runtime::Tokio, super::#name);
            }
        }
    }
    .into()
}
