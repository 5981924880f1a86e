// Never let Puppeteer download a browser: the worker uses the system Chromium
// (PUPPETEER_EXECUTABLE_PATH, or chromium on the PATH).
module.exports = { skipDownload: true };
