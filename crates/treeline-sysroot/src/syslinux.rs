//! `syslinux.cfg` for (ext)linux, which does not read BLS entries: written beside the
//! entries in every new `boot/loader.N` when `boot/syslinux/syslinux.cfg` exists (the
//! link `../loader/syslinux.cfg` an image build makes), as ostree's syslinux backend does.
//! The boot-loader swap then switches both at once.

use crate::bls::BootEntry;

/// Where the link that enables the config lives, relative to the sysroot.
pub const SYSLINUX_LINK: &str = "boot/syslinux/syslinux.cfg";

/// The config for `entries` (in boot order: the first is the default). Paths are those
/// of the entries, relative to the boot partition.
pub fn syslinux_config(entries: &[BootEntry]) -> String {
    let mut out = String::from(
        "# Written by treeline from the boot loader entries in this directory.\n\
         SERIAL 0 115200\nPROMPT 0\nTIMEOUT 30\nDEFAULT ostree-0\n",
    );
    for (i, e) in entries.iter().enumerate() {
        out.push_str(&format!("\nLABEL ostree-{i}\n"));
        if let Some(t) = e.get("title") {
            out.push_str(&format!("\tMENU LABEL {t}\n"));
        }
        if let Some(k) = e.get("linux") {
            out.push_str(&format!("\tKERNEL {k}\n"));
        }
        let initrds: Vec<&str> = e
            .fields
            .iter()
            .filter(|(k, _)| k == "initrd")
            .map(|(_, v)| v.as_str())
            .collect();
        if !initrds.is_empty() {
            out.push_str(&format!("\tINITRD {}\n", initrds.join(",")));
        }
        if let Some(d) = e.get("devicetree") {
            out.push_str(&format!("\tFDT {d}\n"));
        }
        if let Some(o) = e.get("options") {
            out.push_str(&format!("\tAPPEND {o}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_one_label_per_entry_first_is_default() {
        let a = BootEntry::parse(
            "title Debian 2 (ostree:0)\nversion 2\noptions root=LABEL=root rw ostree=/ostree/boot.1/d/c/0\nlinux /ostree/d-c/vmlinuz-6.1\ninitrd /ostree/d-c/initramfs-6.1.img\n",
        );
        let b = BootEntry::parse("title Debian 1 (ostree:1)\nlinux /ostree/d-b/vmlinuz-6.1\n");
        let cfg = syslinux_config(&[a, b]);
        assert!(cfg.contains("DEFAULT ostree-0\n"), "{cfg}");
        assert!(
            cfg.contains(
                "LABEL ostree-0\n\tMENU LABEL Debian 2 (ostree:0)\n\tKERNEL /ostree/d-c/vmlinuz-6.1\n\tINITRD /ostree/d-c/initramfs-6.1.img\n\tAPPEND root=LABEL=root rw ostree=/ostree/boot.1/d/c/0\n"
            ),
            "{cfg}"
        );
        assert!(cfg.ends_with("LABEL ostree-1\n\tMENU LABEL Debian 1 (ostree:1)\n\tKERNEL /ostree/d-b/vmlinuz-6.1\n"), "{cfg}");
    }
}
