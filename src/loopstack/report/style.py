"""The report page's stylesheet (inline: the page fetches nothing)."""

CSS = """
:root{--ink:#1a202c;--muted:#5a6678;--line:#e2e8f0;--bg:#f6f7fb;--a:#2b6cb0;--b:#2f855a;
--re:#d53f3f;--drop:#8a96a8;--dup:#dd6b20;--ooo:#805ad5;--ack:#2f9e5b;--win:#d69e2e}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{background:#1f2937;color:#f9fafb;padding:22px 32px 18px}
header h1{margin:0;font-size:22px;font-weight:650;letter-spacing:.2px}
header .sub{margin:6px 0 0;color:#cbd5e1;font-size:13px}
main{padding:8px 32px 32px;max-width:1100px}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:18px 22px;
margin:18px 0;box-shadow:0 1px 2px rgba(16,24,40,.04)}
h2{font-size:18px;margin:0 0 10px}h3{font-size:14.5px;margin:18px 0 8px;color:#2d3748}
small{color:var(--muted);font-weight:400}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:118px;
background:#fbfcfe}
.card b{display:block;font-size:20px;font-weight:650}.card span{color:var(--muted);font-size:12px}
.card.bad b{color:var(--re)}.card.warn b{color:#b7791f}
table{border-collapse:collapse;margin:4px 0 8px;font-size:13px}
th{text-align:left;font-weight:600;color:var(--muted);border-bottom:2px solid var(--line);
padding:4px 12px 4px 0}
td{border-bottom:1px solid #edf2f7;padding:3px 12px 3px 0;vertical-align:top}
table.num td+td{text-align:right}table.conns td:nth-child(-n+4){text-align:left}
table.warn td:first-child{color:#975a16}
.counters{display:flex;flex-wrap:wrap;gap:0 28px}
.more,.cap{color:var(--muted);font-size:12.5px;margin:4px 0}
.bad{color:var(--re);font-weight:600}
.st{display:inline-block;font-size:12px;font-weight:500;background:#edf2f7;border-radius:10px;
padding:0 8px;color:#2d3748}
.facts{color:var(--muted);margin:0 0 6px}
a{color:var(--a)}
.fig svg{display:block;width:100%;height:auto;max-width:940px}
.legend{font-size:12.5px;color:var(--muted);display:flex;flex-wrap:wrap;gap:14px;margin:0 0 6px}
.legend .k:before{content:"";display:inline-block;width:22px;height:0;margin:0 6px 3px 0;
border-top:2px solid;vertical-align:middle}
.k.d0:before{color:var(--a)}.k.d1:before{color:var(--b)}.k.re:before{color:var(--re)}
.k.drop:before{color:var(--drop);border-top-style:dashed}.k.dup:before{color:var(--dup)}
.k.ooo:before{color:var(--ooo)}.legend .note{font-style:italic}
footer{color:var(--muted);font-size:12.5px;padding:0 32px 28px}
svg text{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace}
.ladder .lb{font-size:11px;fill:#1a202c}.ladder .tm{font-size:10.5px;fill:var(--muted)}
.ladder .life{stroke:#4a5568;stroke-width:1.5}
.ladder .ep{fill:#1f2937}.ladder .ep-t{fill:#fff;font-size:12px;font-weight:600}
.ladder .ar{stroke-width:1.4}.ladder .d0 .ar{stroke:var(--a)}.ladder .d0 .ah{fill:var(--a)}
.ladder .d1 .ar{stroke:var(--b)}.ladder .d1 .ah{fill:var(--b)}
.ladder .t-re .ar{stroke:var(--re);stroke-width:2.2}.ladder .t-re .ah{fill:var(--re)}
.ladder .t-dup .ar{stroke:var(--dup)}.ladder .t-dup .ah{fill:var(--dup)}
.ladder .t-ooo .ar{stroke:var(--ooo)}.ladder .t-ooo .ah{fill:var(--ooo)}
.ladder .rst .ar{stroke:#9b2c2c}.ladder .rst .ah{fill:#9b2c2c}
.ladder .t-drop .ar{stroke:var(--drop);stroke-dasharray:5 3}.ladder .t-drop .lb{fill:#8a96a8}
.x{stroke:var(--re);stroke-width:2.4;fill:none;stroke-linecap:round}
.ladder .pkt:hover .lb{font-weight:700}.ladder .pkt:hover .ar{stroke-width:3}
.tag{stroke:none}.tag-t{font-size:9.5px;fill:#fff;font-weight:600}
.t-re.tag{fill:var(--re)}.t-drop.tag{fill:#718096}.t-dup.tag{fill:var(--dup)}
.t-ooo.tag{fill:var(--ooo)}.t-dack.tag{fill:#b7791f}.t-zw.tag{fill:#c05621}
.t-ka.tag{fill:#4a5568}.t-rst.tag{fill:#9b2c2c}
.ph-hs{fill:#eaf3fc}.ph-data{fill:#fff}.ph-td{fill:#fdf5e8}
.ph-t{font-size:9px;fill:#94a3b8;letter-spacing:1px;text-transform:uppercase}
.fold rect{fill:#f4f6fa;stroke:#cbd5e0;stroke-dasharray:4 3}.fold path{stroke:#cbd5e0;fill:none}
.fold text{font-size:12px;fill:#4a5568;font-style:italic}
.plot{fill:#fff;stroke:#cbd5e0}.grid{stroke:#eef1f5}.axis{font-size:10.5px;fill:#5a6678}
.seg{stroke:#1a202c;stroke-width:1.2;fill:none}
.seg-re{stroke:var(--re);stroke-width:2.2;fill:none}
.seg-drop{stroke:var(--drop);stroke-width:1.6;stroke-dasharray:3 2;fill:none}
.re-m{fill:var(--re);fill-opacity:.25;stroke:var(--re);stroke-width:1.2}
.seg-ooo{stroke:var(--ooo);stroke-width:2;fill:none}
.ackl{stroke:var(--ack);stroke-width:1.5;fill:none}
.win{stroke:var(--win);stroke-width:1.3;fill:none}
.sack{stroke:#9f7aea;stroke-width:3;opacity:.55;fill:none}
.lgbox{fill:#fff;fill-opacity:.92;stroke:#e2e8f0}.lg{font-size:11px;fill:#2d3748}
.cwnd{stroke:#3182ce;stroke-width:1.7;fill:none}
.ssth{stroke:var(--re);stroke-width:1.4;stroke-dasharray:6 3;fill:none}
.rtt{stroke:var(--ack);stroke-width:1.3;fill:none;opacity:.85}.rtt-t{fill:var(--ack)}
"""
