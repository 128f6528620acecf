# dbtune-agent %preun ($1: 0 = erase, 1+ = upgrade).
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable --now dbtune-agent.service >/dev/null 2>&1 || :
fi
exit 0
