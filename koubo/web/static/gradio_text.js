
if (!window.kouboTranslateGradio) {
  const toZh = props.gradio_text;
  const toEn = Object.fromEntries(Object.entries(toZh).map(([en, zh]) => [zh, en]));
  window.kouboTranslateGradio = () => {
    const table = {zh: toZh, en: toEn}[window.kouboLang];
    if (!table) return;
    for (const upload of document.querySelectorAll('.koubo-upload')) {
      const walker = document.createTreeWalker(upload, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const text = node.nodeValue.trim();
        if (table[text]) node.nodeValue = node.nodeValue.replace(text, table[text]);
      }
    }
  };
  new MutationObserver(window.kouboTranslateGradio)
    .observe(document.body, {childList: true, subtree: true, characterData: true});
}
