import { DynamicModule, Global, Module } from '@nestjs/common';
import { ConfigModule } from '@nestjs/config';
import { AppConfig } from './app-config.js';
import { parseConfig } from './parse-config.js';

export interface AppConfigOptions {
  /** Values that take precedence over process.env; tests pass their whole environment here. */
  overrides?: Record<string, string | undefined>;
  /** Read .env from the working directory (default true; tests turn it off). */
  readEnvFile?: boolean;
}

/** Provides AppConfig, validated once at boot, to every module. */
@Global()
@Module({})
export class AppConfigModule {
  static forRoot(options: AppConfigOptions = {}): DynamicModule {
    const readEnvFile = options.readEnvFile ?? true;
    return {
      module: AppConfigModule,
      imports: [
        // Loads .env into process.env (variables already set win), nothing more.
        ConfigModule.forRoot({ ignoreEnvFile: !readEnvFile, envFilePath: '.env' }),
      ],
      providers: [
        {
          provide: AppConfig,
          useFactory: () =>
            parseConfig(
              readEnvFile || !options.overrides
                ? { ...process.env, ...options.overrides }
                : options.overrides,
            ),
        },
      ],
      exports: [AppConfig],
    };
  }
}
