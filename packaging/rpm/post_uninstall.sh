# dbtune-agent %postun ($1: 0 = erased, 1+ = upgraded). The "dbtune" user is kept.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart dbtune-agent.service >/dev/null 2>&1 || :
    fi
fi
exit 0
