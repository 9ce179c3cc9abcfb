
(lang) => {
  window.kouboLang = lang;
  if (window.kouboTranslateGradio) window.kouboTranslateGradio();
  const entry = document.querySelector('script[type=module][src*="/assets/index-"]');
  if (entry) {
    import(new URL('%s', entry.src).href)
      .then((core) => core.changeLocale(lang === 'zh' ? 'zh-CN' : 'en'))
      .catch((error) => console.warn('koubo: Gradio language not switched', error));
  }
}
