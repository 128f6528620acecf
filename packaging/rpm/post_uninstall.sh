# dbtune-agent %postun ($1: 0 = erased, 1+ = upgraded). The "dbtune" user and the state
# directory are kept.
if [ "$1" -eq 0 ]; then
    # Directories the payload created but rpm does not own; non-empty ones (an .rpmsave) stay.
    rmdir /usr/share/dbtune-agent/polkit /usr/share/dbtune-agent /etc/dbtune 2>/dev/null || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart dbtune-agent.service >/dev/null 2>&1 || :
    fi
fi
exit 0
