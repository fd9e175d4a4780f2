/* OHIF's configuration as Tessera serves it under /viewer/ (written over the
 * package's own app-config.js by scripts/fetch-viewer): one DICOMweb data source,
 * Tessera's own /dicom-web/ on the same origin (so no CORS, and the browser's
 * Basic credentials for this origin go with every request). */
window.config = {
  name: 'tessera',
  routerBasename: '/viewer',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'tessera',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'tessera',
      configuration: {
        friendlyName: 'Tessera',
        name: 'tessera',
        wadoUriRoot: '/wado',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        qidoSupportsIncludeField: true,
        imageRendering: 'wadors',
        // the series thumbnails as Tessera renders them (/thumbnail, a JPEG in an
        // <img>), not a frame decoded by OHIF: the first image of the viewport
        // does not wait behind the thumbnail's frame and its decoding
        thumbnailRendering: 'thumbnailDirect',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        bulkDataURI: { enabled: true },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
