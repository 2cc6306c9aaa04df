//! The command line as a user meets it: help texts, store layout and output formats (`cli`),
//! installing and the quickstart (`install`), `export kubeconfig`, the bad-input corpus
//! (`bad_input`), property-based mutations of every input (`input_props`), colours on a terminal
//! (`color`), `kprov edit` with scripted editors (`edit`) and the architecture map matching the
//! tree (`docs_map`). Every case runs
//! the real `kprov` binary (audited, see `kprov_testkit::kprov_cmd`).

use kprov_testkit::KprovBin;

/// The kprov binary under test.
const KPROV: KprovBin = KprovBin::new(env!("CARGO_BIN_EXE_kprov"));

mod bad_input;
mod cli;
mod color;
mod docs_map;
mod edit;
mod export_kubeconfig;
mod input_props;
mod install;
