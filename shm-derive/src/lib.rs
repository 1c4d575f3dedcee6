//! `#[derive(TypeIdentity)]`: the structural identity of a shmring payload type.
//!
//! The derived identity hashes the struct's size and alignment and, in declaration order,
//! each field's name, offset (`offset_of!`) and type identity, recursively. See
//! `shm_core::identity` for what it is for and what it promises.
//!
//! Attributes, on the type:
//! - `#[type_identity(schema = N)]`: the identity is the number `N` instead of the
//!   structure (`shm_core::Identity::schema`);
//! - `#[type_identity(crate = "path")]`: where shm-core is, when it is not a direct
//!   dependency named `shm_core` (for example `crate = "shm_ring::core"`).

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, Data, DeriveInput, Fields, LitInt, LitStr};

/// Derives `shm_core::TypeIdentity` for a struct (named, tuple or unit). Enums and unions
/// are refused: a payload's every bit pattern must be valid, which an enum's is not, and a
/// union has no single layout to describe.
#[proc_macro_derive(TypeIdentity, attributes(type_identity))]
pub fn derive_type_identity(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(mut input: DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let mut krate: syn::Path = syn::parse_quote!(::shm_core);
    let mut schema: Option<LitInt> = None;
    for attr in &input.attrs {
        if !attr.path().is_ident("type_identity") {
            continue;
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let s: LitStr = meta.value()?.parse()?;
                krate = s.parse()?;
                Ok(())
            } else if meta.path.is_ident("schema") {
                schema = Some(meta.value()?.parse()?);
                Ok(())
            } else {
                Err(meta.error("expected `schema = N` or `crate = \"path\"`"))
            }
        })?;
    }

    let fields = match &input.data {
        Data::Struct(s) => s.fields.clone(),
        Data::Enum(e) => {
            return Err(syn::Error::new(
                e.enum_token.span,
                "TypeIdentity cannot be derived for an enum: a shmring payload must be valid \
                 for every bit pattern (bytemuck::Pod), and an enum is not",
            ))
        }
        Data::Union(u) => {
            return Err(syn::Error::new(
                u.union_token.span,
                "TypeIdentity cannot be derived for a union: give it a manual impl with \
                 shm_core::Identity::schema",
            ))
        }
    };

    // Every type parameter must itself have an identity.
    let params: Vec<_> = input
        .generics
        .type_params()
        .map(|p| p.ident.clone())
        .collect();
    {
        let wc = input.generics.make_where_clause();
        for p in &params {
            wc.predicates
                .push(syn::parse_quote!(#p: #krate::TypeIdentity));
        }
    }
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();

    let body = if let Some(schema) = schema {
        quote!(#krate::Identity::schema(#schema))
    } else {
        let entries = match &fields {
            Fields::Named(named) => named
                .named
                .iter()
                .map(|f| {
                    let ident = f.ident.as_ref().expect("named field");
                    let label = ident.to_string();
                    let label = label.strip_prefix("r#").unwrap_or(&label).to_owned();
                    let ty = &f.ty;
                    quote!(#krate::identity::Field::new(
                        #label,
                        ::core::mem::offset_of!(Self, #ident),
                        <#ty as #krate::TypeIdentity>::IDENTITY,
                    ))
                })
                .collect::<Vec<_>>(),
            Fields::Unnamed(unnamed) => unnamed
                .unnamed
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let index = syn::Index::from(i);
                    let label = i.to_string();
                    let ty = &f.ty;
                    quote!(#krate::identity::Field::new(
                        #label,
                        ::core::mem::offset_of!(Self, #index),
                        <#ty as #krate::TypeIdentity>::IDENTITY,
                    ))
                })
                .collect(),
            Fields::Unit => Vec::new(),
        };
        quote!(#krate::Identity::structure(
            ::core::mem::size_of::<Self>(),
            ::core::mem::align_of::<Self>(),
            &[#(#entries),*],
        ))
    };

    Ok(quote! {
        impl #impl_generics #krate::TypeIdentity for #name #ty_generics #where_clause {
            const IDENTITY: #krate::Identity = #body;
        }
    })
}
