//! `#[rpc]`: turns an `async fn` into a conduit RPC method whose parameter names and
//! types are its schema. See `conduit::rpc` for the user-facing documentation.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote};
use syn::{
    parse_macro_input, spanned::Spanned, Attribute, Expr, FnArg, GenericArgument, ItemFn, Pat,
    PathArguments, ReturnType, Type,
};

/// Marks an `async fn` as an RPC method (netconduit's `@server.rpc`). Expands to a
/// function of the same name that returns a `conduit::RpcMethod`; register it with
/// `server.rpc(name)`. The method is called by the function's name, or by the name given
/// as `#[rpc("other_name")]`; its doc comment is `listall`'s description.
///
/// **Parameters** are the schema. Each named parameter is taken from the call's
/// parameter map by its name and read as its type through serde — a native caller's
/// straight from the receive buffer, with no `Value` built in between; before the body
/// runs, every missing, unexpected, wrongly typed or out-of-range argument is collected
/// and answered together as code 2000 with `details.errors = [{field, message, type}]`.
///
/// * `#[default(expr)] name: T` — optional; `expr` when absent (shown by `listall`).
/// * `name: Option<T>` — optional; `None` when absent or `null`.
/// * `#[flatten] req: T` — the whole parameter map as one `Deserialize` struct.
/// * `#[validate] req: T` — the same, then `garde::Validate`d: every rule that fails
///   is one entry of `details.errors` (the Server Guide's pydantic models).
///
/// **Injected parameters** come from the call's context, not from its arguments, and
/// are not part of the schema:
///
/// * `Connection` — the calling connection (send to it, read its id, kick it);
/// * `RpcCall` — the whole call (connection, method name, raw parameter map);
/// * `State<T>` — application state registered with `server.manage(value)`; a call
///   fails with code 1001 when no `T` is managed.
///
/// **Results**: the return type is any `Serialize` (sent as the result) or a
/// `Result<T, E>` with `E: Into<conduit::RpcError>`; an `Err` reaches the client as its
/// code and message (`RpcError::failed(..)`: 1001, `Error in <method>: …`, as
/// netconduit words an exception). A panic in the body is contained and answered with
/// 1001; the shard keeps serving.
///
/// ```ignore
/// use conduit::{rpc, Connection, RpcError, State};
///
/// /// Divide a by b.
/// #[rpc]
/// async fn divide(a: f64, #[default(1.0)] b: f64) -> Result<f64, RpcError> {
///     if b == 0.0 {
///         return Err(RpcError::failed("Division by zero"));
///     }
///     Ok(a / b)
/// }
///
/// #[rpc("whoami")]
/// async fn who(conn: Connection, greeting: Option<String>) -> String {
///     format!("{} {}", greeting.unwrap_or_else(|| "hello".into()), conn.id())
/// }
///
/// server.rpc(divide);
/// server.rpc(who);
/// ```
#[proc_macro_attribute]
pub fn rpc(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    let rename = if attr.is_empty() {
        None
    } else {
        match syn::parse::<syn::LitStr>(attr) {
            Ok(lit) => Some(lit.value()),
            Err(e) => return e.to_compile_error().into(),
        }
    };
    match expand(func, rename) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// What a parameter of the user's function is.
enum Param {
    /// The calling connection (`Connection`), passed by value.
    Connection,
    /// The whole call (`RpcCall`), passed by value.
    Call,
    /// Application state (`State<T>`).
    State(Type),
    /// A named argument taken from the parameter map.
    Named {
        name: String,
        ty: Type,
        default: Option<Expr>,
        optional: bool,
    },
    /// The whole parameter map as one struct (`#[flatten]`), validated with garde when
    /// marked `#[validate]`.
    Flatten { ty: Type, validate: bool },
}

fn last_ident(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        Type::Reference(r) => last_ident(&r.elem),
        _ => None,
    }
}

fn generic_arg(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    let PathArguments::AngleBracketed(args) = &seg.arguments else {
        return None;
    };
    args.args.iter().find_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

/// netconduit (Python) spelling of a Rust type, for `listall`.
fn python_name(ty: &Type) -> String {
    let Some(id) = last_ident(ty) else {
        return match ty {
            Type::Tuple(t) if t.elems.is_empty() => "None".into(),
            Type::Tuple(_) | Type::Array(_) | Type::Slice(_) => "list".into(),
            _ => "Any".into(),
        };
    };
    match id.as_str() {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "isize"
        | "usize" => "int".into(),
        "f32" | "f64" => "float".into(),
        "bool" => "bool".into(),
        "String" | "str" | "char" => "str".into(),
        "Vec" | "VecDeque" | "HashSet" | "BTreeSet" => "list".into(),
        "HashMap" | "BTreeMap" | "AHashMap" => "dict".into(),
        "Value" => "Any".into(),
        "Option" => generic_arg(ty).map_or_else(|| "Any".into(), python_name),
        "Result" => generic_arg(ty).map_or_else(|| "Any".into(), python_name),
        other => other.to_owned(),
    }
}

fn doc_text(attrs: &[Attribute]) -> String {
    let mut lines = Vec::new();
    for a in attrs {
        if !a.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &a.meta {
            if let Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
            {
                lines.push(s.value().trim().to_owned());
            }
        }
    }
    lines.join("\n").trim().to_owned()
}

fn expand(mut func: ItemFn, rename: Option<String>) -> syn::Result<Tokens> {
    if func.sig.asyncness.is_none() {
        return Err(syn::Error::new(
            func.sig.span(),
            "#[rpc] needs an `async fn`",
        ));
    }
    let fn_name = func.sig.ident.clone();
    let method = rename.unwrap_or_else(|| fn_name.to_string());
    let doc = doc_text(&func.attrs);
    let vis = func.vis.clone();

    let mut params = Vec::new();
    for arg in func.sig.inputs.iter_mut() {
        let FnArg::Typed(pt) = arg else {
            return Err(syn::Error::new(arg.span(), "#[rpc] methods take no `self`"));
        };
        let mut default = None;
        let mut flatten = false;
        let mut validate = false;
        let mut keep = Vec::new();
        for a in pt.attrs.drain(..) {
            if a.path().is_ident("default") {
                default = Some(a.parse_args::<Expr>()?);
            } else if a.path().is_ident("flatten") {
                flatten = true;
            } else if a.path().is_ident("validate") {
                flatten = true;
                validate = true;
            } else {
                keep.push(a);
            }
        }
        pt.attrs = keep;
        let ty = (*pt.ty).clone();
        let ident = last_ident(&ty);
        let param = if ident.as_deref() == Some("Connection") {
            Param::Connection
        } else if ident.as_deref() == Some("RpcCall") {
            Param::Call
        } else if ident.as_deref() == Some("State") {
            Param::State(ty)
        } else if flatten {
            Param::Flatten { ty, validate }
        } else {
            let Pat::Ident(pi) = &*pt.pat else {
                return Err(syn::Error::new(
                    pt.pat.span(),
                    "#[rpc] parameters must be plain names",
                ));
            };
            let optional = ident.as_deref() == Some("Option");
            Param::Named {
                name: pi.ident.to_string().trim_start_matches("r#").to_owned(),
                ty,
                default,
                optional,
            }
        };
        params.push(param);
    }

    let (returns_result, ret_name) = match &func.sig.output {
        ReturnType::Default => (false, "None".to_owned()),
        ReturnType::Type(_, ty) => (last_ident(ty).as_deref() == Some("Result"), python_name(ty)),
    };

    // listall info.
    let mut info = quote! {
        ::conduit::RpcInfo::new(#method).doc(#doc).returns(#ret_name)
    };
    for p in &params {
        match p {
            Param::Named {
                name,
                ty,
                default,
                optional,
            } => {
                let tn = python_name(ty);
                info = match (default, optional) {
                    (Some(d), _) => quote! {
                        #info.optional(#name, #tn, ::conduit::args::default_value(&(#d)))
                    },
                    (None, true) => quote! { #info.optional(#name, #tn, ::conduit::Value::Nil) },
                    (None, false) => quote! { #info.param(#name, #tn) },
                };
            }
            Param::Flatten { ty, .. } => {
                let tn = python_name(ty);
                info = quote! { #info.flattened(#tn) };
            }
            Param::Connection | Param::Call | Param::State(_) => {}
        }
    }

    // Argument extraction: everything is taken from `__params` (where the arguments
    // arrived) before the body's future is made, so that future owns what it needs.
    let mut extract = Vec::new();
    let mut pass = Vec::new();
    let mut checks = Vec::new();
    let mut bound = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let var = format_ident!("__arg{}", i);
        match p {
            Param::Connection => {
                extract.push(quote! { let #var = __params.connection().clone(); });
                pass.push(quote! { #var });
            }
            Param::Call => {
                extract.push(quote! { let #var = __params.to_call()?; });
                pass.push(quote! { #var });
            }
            Param::State(ty) => {
                extract.push(quote! {
                    let #var: #ty = <#ty as ::conduit::args::FromCall>::from_params(&__params)?;
                });
                pass.push(quote! { #var });
            }
            Param::Named {
                name,
                ty,
                default,
                optional,
            } => {
                let get = match (default, optional) {
                    (Some(d), _) => quote! { __args.optional::<#ty>(#name, || #d) },
                    (None, true) => {
                        quote! { __args.optional::<#ty>(#name, || ::core::option::Option::None) }
                    }
                    (None, false) => quote! { __args.required::<#ty>(#name) },
                };
                extract.push(quote! { let #var: ::core::option::Option<#ty> = #get; });
                checks.push(quote! { ::core::option::Option::Some(#var) });
                bound.push(var.clone());
                pass.push(quote! { #var });
            }
            Param::Flatten { ty, validate } => {
                let get = if *validate {
                    quote! { __args.flatten_validated::<#ty>() }
                } else {
                    quote! { __args.flatten::<#ty>() }
                };
                extract.push(quote! { let #var: ::core::option::Option<#ty> = #get; });
                checks.push(quote! { ::core::option::Option::Some(#var) });
                bound.push(var.clone());
                pass.push(quote! { #var });
            }
        }
    }

    let impl_name = format_ident!("__conduit_rpc_{}", fn_name);
    func.sig.ident = impl_name.clone();
    func.vis = syn::Visibility::Inherited;
    let outer_attrs: Vec<&Attribute> = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc") || a.path().is_ident("cfg"))
        .collect();

    let unpack = if bound.is_empty() {
        quote! {}
    } else {
        quote! {
            let (#(#checks,)*) = (#(#bound,)*) else {
                return ::core::result::Result::Err(__args.into_error());
            };
        }
    };
    let convert = if returns_result {
        quote! { ::conduit::args::result_value(__out) }
    } else {
        quote! { ::conduit::args::plain_value(__out) }
    };

    Ok(quote! {
        #(#outer_attrs)*
        #vis fn #fn_name() -> ::conduit::RpcMethod {
            #[allow(clippy::all, clippy::pedantic, missing_docs, reason = "the user's function, kept as written inside the generated one")]
            #func

            ::conduit::RpcMethod::typed(
                #info,
                |__params: ::conduit::args::Params<'_>| -> ::core::result::Result<
                    ::conduit::args::Started,
                    ::conduit::RpcError,
                > {
                    let mut __args = ::conduit::args::Args::from_params(&__params)?;
                    #(#extract)*
                    __args.finish()?;
                    #unpack
                    ::core::result::Result::Ok(::std::boxed::Box::pin(async move {
                        let __out = #impl_name(#(#pass),*).await;
                        #convert
                    }))
                },
            )
        }
    })
}
